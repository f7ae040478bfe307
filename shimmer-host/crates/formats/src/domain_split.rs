//! shimmer-ssd's domain-split files (`domain_splits/{split}_..._domain_split.npy`):
//! a 0-d object `.npy` array holding a pickled
//! `dict[frozenset[str], int64 array]`, which item indices each group of
//! domains uses. The pickle is decoded by the `serde-pickle` crate (which
//! runs no Python code), once a linear scan of its opcodes
//! ([`crate::pickle_scan`]) has bounded how deep its values nest, how many
//! bytes decoding them materialises, and the work it takes; its values are
//! then read through a visitor under the same byte budget and a depth
//! bound, so a hostile file cannot exhaust the stack, memory or time.

use crate::error::{FormatError, Result, excerpt};
use crate::file::map_regular;
use crate::npy::pickled_payload;
use crate::pickle_scan::scan;
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use std::cell::Cell;
use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

/// Largest split file read (bytes); the full Simple Shapes dataset's are
/// about 12 MB.
pub const MAX_SPLIT_FILE_BYTES: u64 = 1 << 30;

/// Deepest nesting walked (a domain-split dict is 4 levels deep).
const MAX_DEPTH: usize = 32;

/// Bytes decoding a split may materialise, per byte of its pickle: a
/// domain split is mostly its arrays' bytes, decoded once and read once.
const BUDGET_PER_BYTE: u64 = 4;

/// Bytes decoding any split may materialise on top (the few small values
/// around the arrays, and the 4 KiB each MARK reserves).
const BUDGET_BASE: u64 = 16 << 20;

/// Bytes of one value the visitor builds.
const PY_BYTES: usize = std::mem::size_of::<Py>();

/// One entry of a domain-split file: a group (set of domain names) and
/// its item indices.
pub type SplitEntry = (BTreeSet<String>, Vec<u64>);

/// The groups of a domain-split file and their items.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainSplit {
    path: PathBuf,
    entries: Vec<SplitEntry>,
}

impl DomainSplit {
    /// Reads the domain-split file at `path`.
    ///
    /// # Errors
    /// A file that is not an object `.npy` file, a pickle that cannot be
    /// decoded, or one that is not a dict from sets of domain names to
    /// integer arrays; each message names the file and what was found.
    pub fn read(path: &Path) -> Result<Self> {
        let (_, len) = crate::file::open_regular(path)?;
        if len > MAX_SPLIT_FILE_BYTES {
            return Err(FormatError::new(
                path,
                format!("is {len} bytes, over the {MAX_SPLIT_FILE_BYTES} allowed for a split file"),
            ));
        }
        let file = map_regular(path)?;
        let offset = pickled_payload(path, &file)?;
        let bytes = &file.bytes()[offset..];
        let bad = |what: String| FormatError::new(path, what);
        let total = (bytes.len() as u64)
            .saturating_mul(BUDGET_PER_BYTE)
            .saturating_add(BUDGET_BASE);
        let scanned = scan(bytes, total)
            .map_err(|e| bad(format!("holds a pickle refused before decoding: {e}")))?;
        let mut de = serde_pickle::Deserializer::new(
            bytes,
            serde_pickle::DeOptions::new().replace_unresolved_globals(),
        );
        let left = total.saturating_sub(scanned.bytes);
        let budget = Budget {
            left: Cell::new(usize::try_from(left).unwrap_or(usize::MAX)),
            total,
        };
        let value = Seed {
            budget: &budget,
            depth: 0,
        }
        .deserialize(&mut de)
        .map_err(|e| {
            bad(format!(
                "holds a pickle that cannot be read: {}",
                excerpt(&e.to_string())
            ))
        })?;
        let entries = parse_split(value).map_err(|e| {
            bad(format!(
                "is not a domain-split file (a dict from frozensets of domain names to item arrays): {e}"
            ))
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            entries,
        })
    }

    /// The file read.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every group (set of domain names) and its item indices, in the
    /// order of the file.
    pub fn entries(&self) -> &[SplitEntry] {
        &self.entries
    }

    /// The items of the group of exactly `domains` (in any order).
    pub fn items(&self, domains: &[String]) -> Option<&[u64]> {
        let key: BTreeSet<String> = domains.iter().cloned().collect();
        self.entries
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_slice())
    }

    /// The groups, as `{attr, v}, {v}, ...`, for messages (each name
    /// [`excerpt`]ed: they come from the file).
    pub fn groups_text(&self) -> String {
        self.entries
            .iter()
            .map(|(k, _)| format!("{{{}}}", names_text(k)))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Domain names of a group, each excerpted, for messages.
fn names_text(names: &BTreeSet<String>) -> String {
    names
        .iter()
        .map(|n| excerpt(n))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A Python value as far as a domain split needs it.
#[derive(Debug)]
enum Py {
    None,
    Int(i64),
    Float,
    Bytes(Vec<u8>),
    Str(String),
    /// A list, tuple, set or frozenset.
    Seq(Vec<Py>),
    Dict(Vec<(Py, Py)>),
}

impl Py {
    fn kind(&self) -> &'static str {
        match self {
            Py::None => "None",
            Py::Int(_) => "an integer",
            Py::Float => "a float",
            Py::Bytes(_) => "bytes",
            Py::Str(_) => "a string",
            Py::Seq(_) => "a sequence",
            Py::Dict(_) => "a dict",
        }
    }
}

/// Bytes the visitor may still build (what the scan left of the total).
struct Budget {
    left: Cell<usize>,
    total: u64,
}

impl Budget {
    fn spend<E: serde::de::Error>(&self, bytes: usize) -> std::result::Result<(), E> {
        let left = self.left.get();
        if bytes > left {
            return Err(E::custom(format!(
                "the pickle expands beyond {} bytes, more than a domain split of this size needs",
                self.total
            )));
        }
        self.left.set(left - bytes);
        Ok(())
    }
}

#[derive(Clone, Copy)]
struct Seed<'a> {
    budget: &'a Budget,
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for Seed<'_> {
    type Value = Py;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<Py, D::Error> {
        use serde::de::Error;
        if self.depth > MAX_DEPTH {
            return Err(D::Error::custom(format!(
                "nested deeper than {MAX_DEPTH} levels"
            )));
        }
        self.budget.spend(PY_BYTES)?;
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seed<'_> {
    type Value = Py;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Python value")
    }

    fn visit_unit<E>(self) -> std::result::Result<Py, E> {
        Ok(Py::None)
    }
    fn visit_bool<E>(self, v: bool) -> std::result::Result<Py, E> {
        Ok(Py::Int(i64::from(v)))
    }
    fn visit_i64<E>(self, v: i64) -> std::result::Result<Py, E> {
        Ok(Py::Int(v))
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> std::result::Result<Py, E> {
        i64::try_from(v)
            .map(Py::Int)
            .map_err(|_| E::custom("integer too large"))
    }
    fn visit_f64<E>(self, _: f64) -> std::result::Result<Py, E> {
        Ok(Py::Float)
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<Py, E> {
        self.budget.spend(v.len())?;
        Ok(Py::Str(v.to_string()))
    }
    fn visit_string<E: serde::de::Error>(self, v: String) -> std::result::Result<Py, E> {
        self.budget.spend(v.len())?;
        Ok(Py::Str(v))
    }
    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> std::result::Result<Py, E> {
        self.budget.spend(v.len())?;
        Ok(Py::Bytes(v.to_vec()))
    }
    fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> std::result::Result<Py, E> {
        self.budget.spend(v.len())?;
        Ok(Py::Bytes(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Py, A::Error> {
        let inner = Seed {
            depth: self.depth + 1,
            ..self
        };
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(inner)? {
            out.push(v);
        }
        Ok(Py::Seq(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Py, A::Error> {
        let inner = Seed {
            depth: self.depth + 1,
            ..self
        };
        let mut out = Vec::new();
        while let Some(k) = map.next_key_seed(inner)? {
            let v = map.next_value_seed(inner)?;
            out.push((k, v));
        }
        Ok(Py::Dict(out))
    }
}

/// The dict inside the pickle: either the pickle itself, or the one element
/// of a 0-d object array (NumPy pickles the array; its state is
/// `(version, shape, dtype, fortran_order, [element])`).
fn parse_split(value: Py) -> std::result::Result<Vec<SplitEntry>, String> {
    let dict = match value {
        Py::Dict(d) => d,
        Py::Seq(mut state) if state.len() == 5 => match state.pop() {
            Some(Py::Seq(items)) if items.len() == 1 => match items.into_iter().next() {
                Some(Py::Dict(d)) => d,
                Some(other) => return Err(format!("the array holds {}", other.kind())),
                None => return Err("the array is empty".into()),
            },
            Some(other) => return Err(format!("the array's data is {}", other.kind())),
            None => return Err("the array's state is empty".into()),
        },
        other => return Err(format!("the pickle holds {}", other.kind())),
    };
    let mut entries = Vec::with_capacity(dict.len());
    for (key, items) in dict {
        let names = match key {
            Py::Str(s) => BTreeSet::from([s]),
            Py::Seq(names) => names
                .into_iter()
                .map(|n| match n {
                    Py::Str(s) => Ok(s),
                    other => Err(format!(
                        "a key holds {} instead of a domain name",
                        other.kind()
                    )),
                })
                .collect::<std::result::Result<_, _>>()?,
            other => return Err(format!("a key is {}", other.kind())),
        };
        let label = names_text(&names);
        let indices = int_array(items).map_err(|e| format!("entry {{{label}}}: {e}"))?;
        entries.push((names, indices));
    }
    Ok(entries)
}

/// A pickled NumPy integer array (state `(version, shape, dtype, fortran,
/// bytes)`) or a list of integers, as item indices.
fn int_array(value: Py) -> std::result::Result<Vec<u64>, String> {
    let index = |v: i64| u64::try_from(v).map_err(|_| format!("negative item index {v}"));
    match value {
        Py::Seq(state) if matches!(state.last(), Some(Py::Bytes(_))) && state.len() == 5 => {
            let count = match &state[1] {
                Py::Seq(dims) if dims.len() == 1 => match dims[0] {
                    Py::Int(n) if n >= 0 => n as usize,
                    _ => return Err("the array's shape is not a length".into()),
                },
                _ => return Err("the array is not one-dimensional".into()),
            };
            let big =
                matches!(&state[2], Py::Seq(d) if matches!(d.get(1), Some(Py::Str(o)) if o == ">"));
            let Some(Py::Bytes(bytes)) = state.last() else {
                return Err("the array has no data".into());
            };
            if count == 0 {
                return Ok(Vec::new());
            }
            let size = bytes.len() / count;
            if size * count != bytes.len() || !(size == 4 || size == 8) {
                return Err(format!(
                    "{} bytes for {count} items is not an array of 4- or 8-byte integers",
                    bytes.len()
                ));
            }
            bytes
                .chunks_exact(size)
                .map(|b| {
                    let v = match (size, big) {
                        (8, false) => i64::from_le_bytes(b.try_into().unwrap_or_default()),
                        (8, true) => i64::from_be_bytes(b.try_into().unwrap_or_default()),
                        (_, false) => {
                            i64::from(i32::from_le_bytes(b.try_into().unwrap_or_default()))
                        }
                        (_, true) => {
                            i64::from(i32::from_be_bytes(b.try_into().unwrap_or_default()))
                        }
                    };
                    index(v)
                })
                .collect()
        }
        Py::Seq(items) => items
            .into_iter()
            .map(|v| match v {
                Py::Int(i) => index(i),
                other => Err(format!("an item is {}, not an integer", other.kind())),
            })
            .collect(),
        other => Err(format!(
            "the items are {}, not an integer array",
            other.kind()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../../shared/datasets/simple-shapes-sample/domain_splits")
            .join(name)
    }

    #[test]
    fn reads_the_sample_split_files() {
        let path = sample("train_attr:1.0_attr,v:0.5_v:1.0_seed:0_domain_split.npy");
        if !path.exists() {
            eprintln!("skipped: {} is not here", path.display());
            return;
        }
        let s = DomainSplit::read(&path).unwrap();
        let d = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(s.items(&d(&["v", "attr"])), Some(&[0u64, 1][..]));
        assert_eq!(s.items(&d(&["attr"])), Some(&[0u64, 1, 2, 3][..]));
        assert_eq!(s.items(&d(&["t"])), None);
        assert_eq!(s.groups_text(), "{attr, v}, {v}, {attr}");
    }

    /// Writes `pickle` as the payload of a 0-d object `.npy` file.
    fn split_file(dir: &Path, pickle: &[u8]) -> PathBuf {
        let p = dir.join("split.npy");
        crate::test_util::write_npy(&p, "|O", false, "()", pickle);
        p
    }

    /// `DomainSplit::read`'s error for a split holding `pickle`, checked
    /// to come quickly (the real cost is milliseconds; the bound is a
    /// guard against a regression to seconds or minutes, not a benchmark).
    fn refusal(pickle: &[u8]) -> String {
        let dir = tempfile::tempdir().unwrap();
        let p = split_file(dir.path(), pickle);
        let start = std::time::Instant::now();
        let e = DomainSplit::read(&p).unwrap_err().to_string();
        assert!(start.elapsed().as_secs() < 10, "took {:?}", start.elapsed());
        assert!(e.len() < 400, "the message quotes too much: {e}");
        e
    }

    fn proto2(body: &[u8]) -> Vec<u8> {
        let mut out = b"\x80\x02".to_vec();
        out.extend_from_slice(body);
        out.push(b'.');
        out
    }

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn reads_every_sample_split_file() {
        let dir = sample("");
        let Ok(list) = std::fs::read_dir(&dir) else {
            eprintln!("skipped: {} is not here", dir.display());
            return;
        };
        for entry in list {
            let path = entry.unwrap().path();
            let s = DomainSplit::read(&path).unwrap();
            assert_eq!(s.entries().len(), 3, "{}", path.display());
        }
    }

    #[test]
    fn every_pickle_protocol_reads() {
        // pickle.dumps({frozenset({'attr', 'v'}): [0, 1], frozenset({'v'}):
        // [0, 1, 2, 3], frozenset({'attr'}): (0, 1, 2, 300000)}, protocol=p)
        let pickles = [
            "286470300a635f5f6275696c74696e5f5f0a66726f7a656e7365740a70310a28286c70320a56617474720a70330a6156760a70340a617470350a5270360a286c70370a49300a6149310a617367310a28286c70380a67340a617470390a527031300a286c7031310a49300a6149310a6149320a6149330a617367310a28286c7031320a67330a61747031330a527031340a2849300a49310a49320a493330303030300a747031350a732e",
            "7d710028635f5f6275696c74696e5f5f0a66726f7a656e7365740a7101285d71022858040000006174747271035801000000767104657471055271065d7107284b004b01656801285d710868046174710952710a5d710b284b004b014b024b03656801285d710c68036174710d52710e284b004b014b024ae093040074710f752e",
            "80027d710028635f5f6275696c74696e5f5f0a66726f7a656e7365740a71015d71022858040000006174747271035801000000767104658571055271065d7107284b004b016568015d710868046185710952710a5d710b284b004b014b024b036568015d710c68036185710d52710e284b004b014b024ae093040074710f752e",
            "80037d710028636275696c74696e730a66726f7a656e7365740a71015d71022858040000006174747271035801000000767104658571055271065d7107284b004b016568015d710868046185710952710a5d710b284b004b014b024b036568015d710c68036185710d52710e284b004b014b024ae093040074710f752e",
            "8004953f000000000000007d9428288c0461747472948c01769491945d94284b004b016528680291945d94284b004b014b024b03652868019194284b004b014b024ae09304007494752e",
            "8005953f000000000000007d9428288c0461747472948c01769491945d94284b004b016528680291945d94284b004b014b024b03652868019194284b004b014b024ae09304007494752e",
        ];
        let d = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        for (protocol, text) in pickles.iter().enumerate() {
            let dir = tempfile::tempdir().unwrap();
            let p = split_file(dir.path(), &hex(text));
            let s = DomainSplit::read(&p).unwrap_or_else(|e| panic!("protocol {protocol}: {e}"));
            assert_eq!(s.items(&d(&["v", "attr"])), Some(&[0u64, 1][..]));
            assert_eq!(s.items(&d(&["v"])), Some(&[0u64, 1, 2, 3][..]));
            assert_eq!(s.items(&d(&["attr"])), Some(&[0u64, 1, 2, 300_000][..]));
        }
    }

    #[test]
    fn deep_nesting_is_refused_before_decoding() {
        const N: usize = 200_000;
        // Lists: [[[...]]] built by APPEND.
        let mut lists = b"]".repeat(N);
        lists.extend(b"a".repeat(N - 1));
        // Tuples: ((((),),),) built by TUPLE1.
        let mut tuples = b")".to_vec();
        tuples.extend(b"\x85".repeat(N));
        // Dict values: {0: {0: {0: ... None}}} built by SETITEM.
        let mut dicts = b"}K\x00".repeat(N);
        dicts.push(b'N');
        dicts.extend(b"s".repeat(N));
        // Tuples of MARKs: ((((...)))) built by TUPLE.
        let mut marks = b"(".repeat(100);
        marks.extend(b"t".repeat(100));
        for body in [lists, tuples, dicts, marks] {
            let e = refusal(&proto2(&body));
            assert!(
                e.contains("split.npy: holds a pickle refused before decoding: containers nest deeper than 64 levels"),
                "{e}"
            );
        }
    }

    #[test]
    fn nesting_the_scan_allows_is_refused_by_the_visitor() {
        // 50 levels: within the scan's bound, past the visitor's.
        let mut body = b"]".repeat(50);
        body.extend(b"a".repeat(49));
        let e = refusal(&proto2(&body));
        assert!(e.contains("nested deeper than 32 levels"), "{e}");
    }

    #[test]
    fn memory_bombs_are_refused_before_decoding() {
        let eight_mib = |memoize: bool| {
            let mut body = b"B".to_vec();
            body.extend((8u32 << 20).to_le_bytes());
            body.resize(body.len() + (8 << 20), b'x');
            if memoize {
                body.push(0x94);
            }
            body
        };
        // A MARK bomb: 4 KiB reserved per input byte.
        let marks = b"(".repeat(300_000);
        // Memo clones: each BINGET + MEMOIZE copies 8 MiB.
        let mut clones = eight_mib(true);
        clones.extend(b"0");
        clones.extend(b"h\x00\x940".repeat(2_000));
        clones.push(b'N');
        // One bytes object referenced 200 times (each decoded as a copy).
        let mut refs = b"](".to_vec();
        refs.extend(eight_mib(true));
        refs.extend(b"h\x00".repeat(199));
        refs.push(b'e');
        // DUP copies the value on top.
        let mut dups = eight_mib(false);
        dups.extend(b"2".repeat(200));
        for body in [marks, clones, refs, dups] {
            let e = refusal(&proto2(&body));
            assert!(
                e.contains("split.npy: holds a pickle refused before decoding: decoding it would materialise more than"),
                "{e}"
            );
        }
    }

    #[test]
    fn cpu_bombs_are_refused_before_decoding() {
        // A text LONG of 5 million digits (quadratic to parse).
        let mut long = b"L".to_vec();
        long.extend(b"7".repeat(5_000_000));
        long.extend(b"L\n");
        let e = refusal(&proto2(&long));
        assert!(
            e.contains("refused before decoding: it holds a number written in 5000001 characters"),
            "{e}"
        );
        // A binary LONG4 of a megabyte.
        let mut long4 = b"\x8b".to_vec();
        long4.extend((1u32 << 20).to_le_bytes());
        long4.resize(long4.len() + (1 << 20), 0x7f);
        let e = refusal(&proto2(&long4));
        assert!(e.contains("an integer of 1048576 bytes"), "{e}");
        // REDUCE copies its memoised argument tuple each time.
        let mut reduce = b"(B".to_vec();
        reduce.extend((8u32 << 20).to_le_bytes());
        reduce.resize(reduce.len() + (8 << 20), b'x');
        reduce.extend(b"t\x940");
        reduce.extend(b"cfoo\nbar\nh\x00R0".repeat(2_000));
        reduce.push(b'N');
        let e = refusal(&proto2(&reduce));
        assert!(e.contains("would materialise more than"), "{e}");
        // Many small calls.
        let mut calls = b"cfoo\nbar\n)R0".repeat(20_000);
        calls.push(b'N');
        let e = refusal(&proto2(&calls));
        assert!(e.contains("it makes more than 10000 calls"), "{e}");
    }

    #[test]
    fn malformed_pickles_are_refused_with_the_byte() {
        for (body, want) in [
            (
                &b"a"[..],
                "the stack is empty where the opcode needs a value (at byte 2 ",
            ),
            (
                b"K\x01K\x02a",
                "an opcode adds to a number, bool or None, where it needs a list (at byte 6 ",
            ),
            (
                b"h\x05",
                "memo entry 5 is used before it is set (at byte 2 ",
            ),
            (
                b"B\xff\xff\xff\x00",
                "truncated: an opcode needs 16777215 bytes, 1 remain (at byte 2 ",
            ),
            (b"Q", "opcode 0x51, which is not read"),
            (
                b"K\x01K\x02R",
                "REDUCE is given a number, bool or None for arguments, not a tuple (at byte 6 ",
            ),
        ] {
            let e = refusal(&proto2(body));
            assert!(
                e.contains("refused before decoding: ") && e.contains(want),
                "{e}"
            );
        }
        let e = refusal(b"\x80\x02]");
        assert!(e.contains("ends before its STOP"), "{e}");
    }

    #[test]
    fn long_names_in_errors_are_excerpted() {
        // {frozenset({<a 1 MB name>}): 5}
        let name = "n".repeat(1 << 20);
        let mut body = b"}(c__builtin__\nfrozenset\n]X".to_vec();
        body.extend((name.len() as u32).to_le_bytes());
        body.extend(name.as_bytes());
        body.extend(b"a\x85RK\x05u");
        let e = refusal(&proto2(&body));
        assert!(
            e.contains("entry {nnnn") && e.contains("\u{2026} (1048576 bytes)}"),
            "{e}"
        );
    }

    #[test]
    fn a_plain_npy_or_garbage_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("split.npy");
        // A pickled 5: an object array, but not a dict.
        crate::test_util::write_npy(&p, "|O", false, "()", b"\x80\x03K\x05.");
        let e = DomainSplit::read(&p).unwrap_err().to_string();
        assert!(
            e.contains("split.npy: is not a domain-split file") && e.contains("integer"),
            "{e}"
        );
    }
}
