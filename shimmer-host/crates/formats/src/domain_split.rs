//! shimmer-ssd's domain-split files (`domain_splits/{split}_..._domain_split.npy`):
//! a 0-d object `.npy` array holding a pickled
//! `dict[frozenset[str], int64 array]`, which item indices each group of
//! domains uses. The pickle is decoded by the `serde-pickle` crate (which
//! runs no Python code); its values are read through a visitor with a depth
//! and size budget, so a hostile file cannot exhaust the stack or memory
//! while being walked.

use crate::error::{FormatError, Result};
use crate::file::map_regular;
use crate::npy::pickled_payload;
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
        let mut de = serde_pickle::Deserializer::new(
            bytes,
            serde_pickle::DeOptions::new().replace_unresolved_globals(),
        );
        let budget = Budget {
            left: Cell::new(16 * bytes.len() + (1 << 20)),
        };
        let value = Seed {
            budget: &budget,
            depth: 0,
        }
        .deserialize(&mut de)
        .map_err(|e| bad(format!("holds a pickle that cannot be read: {e}")))?;
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

    /// The groups, as `{attr, v}, {v}, ...`, for messages.
    pub fn groups_text(&self) -> String {
        self.entries
            .iter()
            .map(|(k, _)| format!("{{{}}}", k.iter().cloned().collect::<Vec<_>>().join(", ")))
            .collect::<Vec<_>>()
            .join(", ")
    }
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

/// What may still be read, in nodes plus bytes / 8.
struct Budget {
    left: Cell<usize>,
}

impl Budget {
    fn spend<E: serde::de::Error>(&self, units: usize) -> std::result::Result<(), E> {
        let left = self.left.get();
        if units > left {
            return Err(E::custom(
                "the pickle expands beyond any domain split's size",
            ));
        }
        self.left.set(left - units);
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
        self.budget.spend(1)?;
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
        self.budget.spend(v.len() / 8)?;
        Ok(Py::Str(v.to_string()))
    }
    fn visit_string<E: serde::de::Error>(self, v: String) -> std::result::Result<Py, E> {
        self.budget.spend(v.len() / 8)?;
        Ok(Py::Str(v))
    }
    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> std::result::Result<Py, E> {
        self.budget.spend(v.len() / 8)?;
        Ok(Py::Bytes(v.to_vec()))
    }
    fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> std::result::Result<Py, E> {
        self.budget.spend(v.len() / 8)?;
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
        let label = names.iter().cloned().collect::<Vec<_>>().join(", ");
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
