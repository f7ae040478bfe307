//! PyTorch zip checkpoints read without running their pickle: the
//! archives `torch.save` writes (Lightning's `.ckpt`, a
//! `torch.save(state_dict)` `.pt`), an `<archive>/data.pkl` pickle beside
//! raw `<archive>/data/<key>` storages, read as plain data (no tensor
//! library): each tensor of the state dict as a [`TensorEntry`] (name,
//! element type, shape, offset, strides and its bytes), and a Lightning
//! checkpoint's hyper-parameters, version and recorded migrations.
//!
//! A pickle is a program: `pickle.load` imports and calls whatever it
//! names. This reader never does. The pickle is first scanned opcode by
//! opcode under depth, size and call budgets ([`crate::pickle_scan`],
//! under PyTorch's rules), so a bomb is one error before anything is
//! built; then a small interpreter of our own builds inert values from it:
//! a GLOBAL is a name, a REDUCE or NEWOBJ an object that records what it
//! would have called, and a persistent id (a storage) a reference. Ours
//! rather than `candle_core::pickle`, whose `SETITEMS` reverses the order
//! of a state dict, whose `DICT` opcode is read as an empty dict, and whose
//! memo keeps a container as it was before its items were set. Tensors
//! come from `_rebuild_tensor_v2` calls, their bytes from the archive's
//! storages, bounded by what the archive holds.
//!
//! ```no_run
//! let ckpt = shimmer_formats::torch_zip::read("gw.ckpt".as_ref())?;
//! for t in &ckpt.tensors {
//!     println!("{} {:?} {:?}: {} bytes", t.name, t.element, t.shape, t.bytes().len());
//! }
//! # Ok::<(), shimmer_formats::FormatError>(())
//! ```

use crate::dtype::Element;
use crate::error::{FormatError, Result, excerpt};
use crate::file::{map_regular, open_regular};
use crate::pickle_scan::{Rules, scan_with};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::io::{Cursor, Read};
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use zip::ZipArchive;

/// Most entries an archive may list (one per storage, plus a few).
pub const MAX_ENTRIES: usize = 1 << 17;

/// Largest `data.pkl` read (bytes): about 200 per tensor.
pub const MAX_PICKLE_BYTES: u64 = 256 << 20;

/// Bytes the interpreter may build, on top of [`BUDGET_PER_BYTE`] per byte
/// of the pickle.
const BUDGET_BASE: u64 = 64 << 20;

/// Bytes the interpreter may build per byte of the pickle.
const BUDGET_PER_BYTE: u64 = 16;

/// The scanner's rules for PyTorch's pickles: a Lightning checkpoint
/// nests about 8 deep and makes 2 to 3 calls per tensor.
const TORCH: Rules = Rules {
    depth: 64,
    calls: 100_000,
    mark_bytes: 16,
    what: "a PyTorch checkpoint",
    usual_depth: "about 8",
    usual_calls: "2 to 3 per tensor",
    torch: true,
};

/// The key under which shimmer's `migrate_ckpt` records the migrations a
/// Lightning checkpoint has had.
pub const MIGRATION_KEY: &str = "_migrate-ckpt-migrations";

/// What a PyTorch zip checkpoint holds, read without running any of its
/// pickle.
#[derive(Clone, Debug)]
pub struct TorchZip {
    /// The state dict (for a Lightning checkpoint its `state_dict` entry;
    /// for a plain `torch.save` of a state dict the whole object), in the
    /// pickle's order.
    pub tensors: Vec<TensorEntry>,
    /// What a Lightning checkpoint holds beside its state dict; `None` for
    /// a plain state dict.
    pub lightning: Option<Lightning>,
}

/// The entries of a Lightning checkpoint beside its state dict.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Lightning {
    /// `hyper_parameters`, as JSON: numbers, strings, bools, None, lists,
    /// dicts; any other object (e.g. a pickled reference to `torch.tanh`)
    /// as `{"__global__": "torch.tanh"}` — never imported nor called. A
    /// call's arguments, items and state follow under `args`, `items`,
    /// `list`, `state`; a dict subclass (Lightning's `AttributeDict`) is
    /// its dict; non-finite floats are the strings `"nan"`, `"inf"`,
    /// `"-inf"`.
    pub hyper_parameters: Option<Value>,
    /// `pytorch-lightning_version`, when present.
    pub version: Option<String>,
    /// The migration names recorded under [`MIGRATION_KEY`] (its strings,
    /// in order), `None` when the key is absent or not a list.
    pub migrations: Option<Vec<String>>,
}

/// One tensor of the state dict: where its elements lie in its storage,
/// and the storage's bytes (shared by the tensors that view it).
#[derive(Clone)]
pub struct TensorEntry {
    /// Its name in the state dict.
    pub name: String,
    /// Its element type (little-endian; `torch.bool` is [`Element::Bool`],
    /// one byte, 0 or 1).
    pub element: Element,
    /// Its size, outermost first.
    pub shape: Vec<usize>,
    /// Its first element's index in its storage.
    pub offset: usize,
    /// Its strides, in elements (contiguous: checked when read).
    pub stride: Vec<usize>,
    /// Its storage's key (`<archive>/data/<key>`).
    pub storage: String,
    /// The storage's bytes.
    bytes: Arc<Vec<u8>>,
    /// Where the tensor's elements lie in `bytes` (checked when read).
    range: Range<usize>,
}

impl TensorEntry {
    /// The tensor's elements, contiguous, `shape`'s product times the
    /// element's size bytes.
    pub fn bytes(&self) -> &[u8] {
        self.bytes.get(self.range.clone()).unwrap_or_default()
    }
}

impl std::fmt::Debug for TensorEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TensorEntry")
            .field("name", &self.name)
            .field("element", &self.element)
            .field("shape", &self.shape)
            .field("offset", &self.offset)
            .field("stride", &self.stride)
            .field("storage", &self.storage)
            .field("bytes", &self.range.len())
            .finish()
    }
}

/// Whether `path` starts like a zip archive (a PyTorch checkpoint), read
/// from its first bytes.
///
/// # Errors
/// A file that is not a regular one, or cannot be read.
pub fn is_torch_zip(path: &Path) -> Result<bool> {
    let (file, _) = open_regular(path)?;
    let mut head = Vec::with_capacity(4);
    file.take(4)
        .read_to_end(&mut head)
        .map_err(|e| FormatError::new(path, format!("cannot read: {e}")))?;
    Ok(head == b"PK\x03\x04" || head == b"PK\x05\x06")
}

/// Reads the PyTorch zip checkpoint at `path`; see [`TorchZip`].
///
/// # Errors
/// A file that is not such an archive, a pickle refused by the scan or not
/// read, a state dict entry that is not a tensor read (its name and why),
/// or a storage missing or too short.
pub fn read(path: &Path) -> Result<TorchZip> {
    let map = map_regular(path)?;
    read_bytes(map.bytes()).map_err(|e| FormatError::new(path, e))
}

/// The archive being read, and how many bytes may still be read from it.
struct Archive<'a> {
    zip: ZipArchive<Cursor<&'a [u8]>>,
    left: u64,
}

impl Archive<'_> {
    /// The bytes of entry `name`, at most `max`; what the archive holds in
    /// all is read at most once (overlapping entries cannot multiply it).
    fn entry(&mut self, name: &str, max: u64) -> Step<Option<Vec<u8>>> {
        let mut file = match self.zip.by_name(name) {
            Ok(f) => f,
            Err(zip::result::ZipError::FileNotFound) => return Ok(None),
            Err(e) => return Err(format!("cannot read {}: {e}", excerpt(name))),
        };
        if !file.is_file() {
            return Err(format!("{} is not a file in the archive", excerpt(name)));
        }
        let size = file.size();
        if size > max.min(self.left) {
            return Err(format!(
                "{} is {size} bytes, more than the {} this archive can hold",
                excerpt(name),
                max.min(self.left)
            ));
        }
        self.left -= size;
        let mut out = Vec::with_capacity(size as usize);
        file.by_ref()
            .take(size + 1)
            .read_to_end(&mut out)
            .map_err(|e| format!("cannot read {}: {e}", excerpt(name)))?;
        if out.len() as u64 != size {
            return Err(format!(
                "{} holds {} bytes where the archive lists {size}",
                excerpt(name),
                out.len()
            ));
        }
        Ok(Some(out))
    }
}

/// Reads a PyTorch zip checkpoint from its bytes; the error does not name
/// the file.
fn read_bytes(bytes: &[u8]) -> Step<TorchZip> {
    if !bytes.starts_with(b"PK") {
        return Err("is not a PyTorch checkpoint: not a zip archive (torch.save writes one since PyTorch 1.6)".into());
    }
    let zip = ZipArchive::new(Cursor::new(bytes))
        .map_err(|e| format!("is not a readable zip archive: {e}"))?;
    if zip.len() > MAX_ENTRIES {
        return Err(format!(
            "lists {} entries, more than the {MAX_ENTRIES} read",
            zip.len()
        ));
    }
    let pickle_name = zip
        .file_names()
        .filter_map(|n| n.ok())
        .find(|n| {
            n.strip_suffix("/data.pkl")
                .is_some_and(|p| !p.contains('/'))
        })
        .map(|n| n.into_owned())
        .ok_or("holds no <archive>/data.pkl: not a checkpoint torch.save wrote")?;
    let prefix = pickle_name.trim_end_matches("/data.pkl").to_owned();
    let mut archive = Archive {
        zip,
        left: bytes.len() as u64,
    };
    if let Some(order) = archive.entry(&format!("{prefix}/byteorder"), 16)?
        && order != b"little"
    {
        return Err(format!(
            "stores its tensors in byte order {}, not little",
            excerpt(&String::from_utf8_lossy(&order))
        ));
    }
    let pickle = archive
        .entry(&pickle_name, MAX_PICKLE_BYTES)?
        .ok_or("cannot read its data.pkl")?;
    let budget = BUDGET_BASE + BUDGET_PER_BYTE * pickle.len() as u64;
    scan_with(&pickle, budget, TORCH)
        .map_err(|e| format!("holds a pickle refused before reading: {e}"))?;
    let top = Interp::run(&pickle).map_err(|e| format!("holds a pickle not read: {e}"))?;

    let top_dict = top.as_dict();
    let inner = top_dict.and_then(|d| get(d, "state_dict"));
    let (state, lightning) = match (top_dict, inner) {
        (Some(d), Some(state)) => {
            let record = match get(d, MIGRATION_KEY) {
                Some(Py::List(names) | Py::Tuple(names)) => Some(
                    names
                        .iter()
                        .filter_map(|n| match n {
                            Py::Str(s) => Some(s.clone()),
                            _ => None,
                        })
                        .collect::<Vec<_>>(),
                ),
                _ => None,
            };
            let version = match get(d, "pytorch-lightning_version") {
                Some(Py::Str(s)) => Some(s.clone()),
                _ => None,
            };
            (
                state,
                Some(Lightning {
                    hyper_parameters: get(d, "hyper_parameters").map(Py::json),
                    version,
                    migrations: record,
                }),
            )
        }
        _ => (&top, None),
    };
    let Some(state) = state.as_dict() else {
        return Err(format!("holds {}, not a state dict", state.kind()));
    };
    let mut storages = HashMap::new();
    let mut tensors = Vec::with_capacity(state.len());
    for (name, value) in state {
        let Py::Str(name) = name else {
            return Err(format!(
                "its state dict has a key that is {}, not a string",
                name.kind()
            ));
        };
        let t = entry(name, value, &prefix, &mut archive, &mut storages)
            .map_err(|e| format!("tensor {}: {e}", excerpt(name)))?;
        tensors.push(t);
    }
    Ok(TorchZip { tensors, lightning })
}

/// The value of string key `key` in a pickled dict.
fn get<'a>(items: &'a [(Py, Py)], key: &str) -> Option<&'a Py> {
    items
        .iter()
        .rev()
        .find(|(k, _)| matches!(k, Py::Str(s) if s == key))
        .map(|(_, v)| v)
}

/// A storage's element type.
fn storage_element(class: &str) -> Option<Element> {
    Some(match class {
        "torch.FloatStorage" => Element::F32,
        "torch.DoubleStorage" => Element::F64,
        "torch.HalfStorage" => Element::F16,
        "torch.BFloat16Storage" => Element::BF16,
        "torch.LongStorage" => Element::I64,
        "torch.IntStorage" => Element::I32,
        "torch.BoolStorage" => Element::Bool,
        "torch.ByteStorage" => Element::U8,
        _ => return None,
    })
}

/// The tensor `name` that a `_rebuild_tensor_v2` (or `_rebuild_parameter`)
/// call in the state dict stands for, its storage read from the archive
/// (once per storage).
fn entry(
    name: &str,
    value: &Py,
    prefix: &str,
    archive: &mut Archive,
    storages: &mut HashMap<String, Arc<Vec<u8>>>,
) -> Step<TensorEntry> {
    let (callee, args) = value
        .call()
        .ok_or_else(|| format!("is {}, not a tensor", value.kind()))?;
    let args = match args {
        Py::Tuple(a) => a.as_slice(),
        _ => &[],
    };
    if callee == "torch._utils._rebuild_parameter"
        && let Some(data) = args.first()
    {
        return entry(name, data, prefix, archive, storages);
    }
    if callee != "torch._utils._rebuild_tensor_v2" || args.len() < 4 {
        return Err(format!("is a call of {}, not a tensor", excerpt(callee)));
    }
    let bad = |what: &str| format!("its {what} is not as _rebuild_tensor_v2 takes it");
    let Py::Persistent(id) = &args[0] else {
        return Err(bad("storage"));
    };
    let Py::Tuple(id) = id.as_ref() else {
        return Err(bad("storage"));
    };
    let (class, key, stored) = match id.as_slice() {
        [
            Py::Str(tag),
            Py::Global(class),
            key,
            _location,
            Py::Int(numel),
        ] if tag == "storage" => {
            let key = match key {
                Py::Str(k) => k.clone(),
                Py::Int(k) => k.to_string(),
                _ => return Err(bad("storage key")),
            };
            let stored = usize::try_from(*numel).map_err(|_| bad("storage size"))?;
            (class, key, stored)
        }
        _ => return Err(bad("storage")),
    };
    let element = storage_element(class).ok_or_else(|| {
        format!(
            "has storage type {}, a dtype not read (float32, float16, bfloat16, float64, int64, int32, bool and uint8 are)",
            excerpt(class)
        )
    })?;
    let ints = |v: &Py, what: &str| -> Step<Vec<usize>> {
        match v {
            Py::Tuple(items) | Py::List(items) => items
                .iter()
                .map(|i| match i {
                    Py::Int(n) => usize::try_from(*n).map_err(|_| bad(what)),
                    _ => Err(bad(what)),
                })
                .collect(),
            _ => Err(bad(what)),
        }
    };
    let offset = match &args[1] {
        Py::Int(o) => usize::try_from(*o).map_err(|_| bad("offset"))?,
        _ => return Err(bad("offset")),
    };
    let shape = ints(&args[2], "size")?;
    let stride = ints(&args[3], "stride")?;
    let numel = shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| bad("size"))?;
    if stride.len() != shape.len() {
        return Err(bad("stride"));
    }
    let mut expected = 1usize;
    for (&d, &s) in shape.iter().zip(&stride).rev() {
        if d != 1 && s != expected && numel != 0 {
            return Err(format!(
                "is not contiguous (size {shape:?}, stride {stride:?}); only contiguous tensors are read"
            ));
        }
        expected = expected.saturating_mul(d);
    }
    let end = offset.checked_add(numel).ok_or_else(|| bad("offset"))?;
    if end > stored {
        return Err(format!(
            "reads elements {offset}..{end} of storage {}, which declares {stored}",
            excerpt(&key)
        ));
    }
    let elem = element.size();
    let bytes = match storages.get(&key) {
        Some(b) => Arc::clone(b),
        None => {
            let entry_name = format!("{prefix}/data/{key}");
            let bytes = archive.entry(&entry_name, u64::MAX)?.ok_or_else(|| {
                format!(
                    "its storage {} is missing from the archive",
                    excerpt(&entry_name)
                )
            })?;
            let bytes = Arc::new(bytes);
            storages.insert(key.clone(), Arc::clone(&bytes));
            bytes
        }
    };
    let need = stored.saturating_mul(elem);
    if bytes.len() < need {
        return Err(format!(
            "its storage data/{} is too short: {} bytes, where {stored} elements of {elem} bytes need {need}",
            excerpt(&key),
            bytes.len()
        ));
    }
    Ok(TensorEntry {
        name: name.to_owned(),
        element,
        shape,
        offset,
        stride,
        storage: key,
        bytes,
        range: offset * elem..end * elem,
    })
}

type Step<T = ()> = std::result::Result<T, String>;

/// A value the interpreter builds: Python's plain values, and inert
/// stand-ins for everything that would run code.
#[derive(Clone, Debug, PartialEq)]
enum Py {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    /// A list, or a set.
    List(Vec<Py>),
    Tuple(Vec<Py>),
    Dict(Vec<(Py, Py)>),
    /// A GLOBAL: `module.name`, never imported.
    Global(String),
    /// What a REDUCE, NEWOBJ or BUILD would have made, never called.
    Object(Box<Object>),
    /// A persistent id (`torch.save`'s storages).
    Persistent(Box<Py>),
}

/// A call that was not made: what it would have called, with what, and
/// what the pickle then put into its result.
#[derive(Clone, Debug, PartialEq)]
struct Object {
    callee: Py,
    args: Py,
    items: Vec<(Py, Py)>,
    list: Vec<Py>,
    state: Option<Py>,
}

impl Py {
    fn kind(&self) -> &'static str {
        match self {
            Py::None => "None",
            Py::Bool(_) => "a bool",
            Py::Int(_) => "an integer",
            Py::Float(_) => "a float",
            Py::Str(_) => "a string",
            Py::Bytes(_) => "bytes",
            Py::List(_) => "a list",
            Py::Tuple(_) => "a tuple",
            Py::Dict(_) => "a dict",
            Py::Global(_) => "a global",
            Py::Object(_) => "an object",
            Py::Persistent(_) => "a persistent id",
        }
    }

    /// The items of a dict, or of an object that took items (a dict subclass).
    fn as_dict(&self) -> Option<&[(Py, Py)]> {
        match self {
            Py::Dict(d) => Some(d),
            Py::Object(o) if !o.items.is_empty() => Some(&o.items),
            _ => None,
        }
    }

    /// The global a call would have called, and its arguments.
    fn call(&self) -> Option<(&str, &Py)> {
        match self {
            Py::Object(o) => match &o.callee {
                Py::Global(g) => Some((g, &o.args)),
                _ => None,
            },
            _ => None,
        }
    }

    /// The value as JSON (see [`Lightning::hyper_parameters`]).
    fn json(&self) -> Value {
        let list = |items: &[Py]| Value::Array(items.iter().map(Py::json).collect());
        let dict = |items: &[(Py, Py)]| {
            let mut m = Map::new();
            for (k, v) in items {
                let key = match k {
                    Py::Str(s) => s.clone(),
                    other => other.json().to_string(),
                };
                m.insert(key, v.json());
            }
            Value::Object(m)
        };
        match self {
            Py::None => Value::Null,
            Py::Bool(b) => Value::Bool(*b),
            Py::Int(i) => Value::from(*i),
            Py::Float(f) if f.is_nan() => Value::from("nan"),
            Py::Float(f) if f.is_infinite() => Value::from(if *f > 0.0 { "inf" } else { "-inf" }),
            Py::Float(f) => Value::from(*f),
            Py::Str(s) => Value::from(s.as_str()),
            Py::Bytes(b) => Value::from(b.as_slice()),
            Py::List(items) | Py::Tuple(items) => list(items),
            Py::Dict(items) => dict(items),
            Py::Global(g) => {
                Value::Object(Map::from_iter([("__global__".into(), g.as_str().into())]))
            }
            Py::Persistent(id) => {
                Value::Object(Map::from_iter([("__persistent__".into(), id.json())]))
            }
            Py::Object(o) => {
                let plain = o.list.is_empty() && o.state.is_none();
                if plain && !o.items.is_empty() {
                    return dict(&o.items);
                }
                let mut m = match o.callee.json() {
                    Value::Object(m) => m,
                    other => Map::from_iter([("__global__".into(), other)]),
                };
                if !matches!(&o.args, Py::Tuple(a) if a.is_empty()) {
                    m.insert("args".into(), o.args.json());
                }
                if !o.items.is_empty() {
                    m.insert("items".into(), dict(&o.items));
                }
                if !o.list.is_empty() {
                    m.insert("list".into(), list(&o.list));
                }
                if let Some(state) = &o.state {
                    m.insert("state".into(), state.json());
                }
                Value::Object(m)
            }
        }
    }
}

/// A stack entry: a memo reference (what a container opcode then
/// modifies, as in the memo) or a value.
enum Slot {
    Ref(u32),
    Val(Py),
}

/// The interpreter: the unpickler's stack machine over [`Py`] values,
/// modelled as the scanner models it under PyTorch's rules (a memo
/// reference is copied when it is taken off the stack), so the scanner's
/// depth bound holds for what it builds and its byte budget within a
/// factor of 2 (a value memoised and then taken once is copied once more
/// than counted).
struct Interp<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Slot>,
    marks: Vec<usize>,
    memo: HashMap<u32, Py>,
}

impl<'a> Interp<'a> {
    fn run(data: &'a [u8]) -> Step<Py> {
        let mut it = Interp {
            data,
            pos: 0,
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
        };
        loop {
            let at = it.pos;
            match it.step() {
                Ok(Some(top)) => return Ok(top),
                Ok(None) => {}
                Err(e) => return Err(format!("{e} (at byte {at} of the pickle)")),
            }
        }
    }

    fn take(&mut self, n: u64) -> Step<&'a [u8]> {
        let data = self.data;
        let end = usize::try_from(n)
            .ok()
            .and_then(|n| self.pos.checked_add(n))
            .filter(|&e| e <= data.len())
            .ok_or("truncated")?;
        let out = &data[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn le(&mut self, n: u64) -> Step<u64> {
        Ok(self
            .take(n)?
            .iter()
            .rev()
            .fold(0, |v, &b| (v << 8) | u64::from(b)))
    }

    fn line(&mut self) -> Step<String> {
        let rest = &self.data[self.pos..];
        let end = rest.iter().position(|&b| b == b'\n').ok_or("truncated")?;
        let text = self.take(end as u64 + 1)?;
        let text = &text[..end];
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        String::from_utf8(text.to_vec()).map_err(|_| "a name is not UTF-8".into())
    }

    fn text(&mut self, width: u64) -> Step<Py> {
        let n = self.le(width)?;
        let bytes = self.take(n)?;
        String::from_utf8(bytes.to_vec())
            .map(Py::Str)
            .map_err(|_| "a string is not UTF-8".into())
    }

    fn bytes(&mut self, width: u64) -> Step<Py> {
        let n = self.le(width)?;
        Ok(Py::Bytes(self.take(n)?.to_vec()))
    }

    fn resolve(&self, slot: Slot) -> Step<Py> {
        match slot {
            Slot::Val(v) => Ok(v),
            Slot::Ref(id) => self
                .memo
                .get(&id)
                .cloned()
                .ok_or_else(|| format!("memo entry {id} is not set")),
        }
    }

    fn pop(&mut self) -> Step<Py> {
        if self.stack.len() <= self.marks.last().copied().unwrap_or(0) {
            return Err("the stack is empty where a value is needed".into());
        }
        let slot = self.stack.pop().ok_or("the stack is empty")?;
        self.resolve(slot)
    }

    fn pop_mark(&mut self) -> Step<Vec<Py>> {
        let start = self
            .marks
            .pop()
            .ok_or("an opcode needs a MARK that was never set")?;
        let slots = self.stack.split_off(start.min(self.stack.len()));
        slots.into_iter().map(|s| self.resolve(s)).collect()
    }

    fn top(&mut self) -> Step<&mut Py> {
        if self.stack.len() <= self.marks.last().copied().unwrap_or(0) {
            return Err("the stack is empty where a container is needed".into());
        }
        match self.stack.last_mut() {
            Some(Slot::Val(v)) => Ok(v),
            Some(Slot::Ref(id)) => self
                .memo
                .get_mut(id)
                .ok_or_else(|| "a memo entry is not set".into()),
            None => Err("the stack is empty".into()),
        }
    }

    fn append(&mut self, items: Vec<Py>) -> Step {
        match self.top()? {
            Py::List(l) => l.extend(items),
            Py::Object(o) => o.list.extend(items),
            other => return Err(format!("an opcode appends to {}", other.kind())),
        }
        Ok(())
    }

    fn set_items(&mut self, items: Vec<Py>) -> Step {
        if !items.len().is_multiple_of(2) {
            return Err("SETITEMS is given an odd number of values".into());
        }
        let mut pairs = Vec::with_capacity(items.len() / 2);
        let mut it = items.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            pairs.push((k, v));
        }
        match self.top()? {
            Py::Dict(d) => d.extend(pairs),
            Py::Object(o) => o.items.extend(pairs),
            other => return Err(format!("an opcode sets items of {}", other.kind())),
        }
        Ok(())
    }

    fn memoize(&mut self, id: u32) -> Step {
        let v = self.pop()?;
        self.memo.insert(id, v);
        self.stack.push(Slot::Ref(id));
        Ok(())
    }

    fn push(&mut self, v: Py) -> Step<Option<Py>> {
        self.stack.push(Slot::Val(v));
        Ok(None)
    }

    /// What a call of `callee` with `args` stands for, never made: an
    /// `OrderedDict()` is an empty dict, `getattr(<global>, name)` the
    /// global `<global>.name`, anything else an [`Object`].
    fn call(callee: Py, args: Py) -> Py {
        if let Py::Global(g) = &callee {
            if g == "collections.OrderedDict" || g == "collections.defaultdict" {
                return Py::Dict(Vec::new());
            }
            if (g == "builtins.getattr" || g == "__builtin__.getattr")
                && let Py::Tuple(a) = &args
                && let [Py::Global(owner), Py::Str(attr)] = a.as_slice()
            {
                let owner = match owner.as_str() {
                    "torch._C._VariableFunctionsClass" => "torch",
                    o => o,
                };
                return Py::Global(format!("{owner}.{attr}"));
            }
        }
        Py::Object(Box::new(Object {
            callee,
            args,
            items: Vec::new(),
            list: Vec::new(),
            state: None,
        }))
    }

    /// Runs one opcode; the result at STOP.
    fn step(&mut self) -> Step<Option<Py>> {
        let op = self.take(1)?[0];
        match op {
            0x80 => {
                self.take(1)?;
            }
            0x95 => {
                self.take(8)?;
            }
            b'.' => return self.pop().map(Some),
            b'(' => self.marks.push(self.stack.len()),
            b'0' => {
                if self.stack.len() <= self.marks.last().copied().unwrap_or(0) {
                    self.pop_mark()?;
                } else {
                    self.pop()?;
                }
            }
            b'1' => {
                self.pop_mark()?;
            }
            b'2' => {
                let v = self.top()?.clone();
                return self.push(v);
            }
            b'q' => {
                let id = self.le(1)? as u32;
                self.memoize(id)?;
            }
            b'r' => {
                let id = self.le(4)? as u32;
                self.memoize(id)?;
            }
            0x94 => self.memoize(self.memo.len() as u32)?,
            b'h' | b'j' => {
                let id = self.le(if op == b'h' { 1 } else { 4 })? as u32;
                if !self.memo.contains_key(&id) {
                    return Err(format!("memo entry {id} is used before it is set"));
                }
                self.stack.push(Slot::Ref(id));
            }
            b'N' => return self.push(Py::None),
            0x88 | 0x89 => return self.push(Py::Bool(op == 0x88)),
            b'G' => {
                let b = self.take(8)?;
                let f = f64::from_be_bytes(b.try_into().map_err(|_| "truncated")?);
                return self.push(Py::Float(f));
            }
            b'J' => {
                let v = self.le(4)? as u32 as i32;
                return self.push(Py::Int(i64::from(v)));
            }
            b'K' | b'M' => {
                let v = self.le(if op == b'K' { 1 } else { 2 })?;
                return self.push(Py::Int(v as i64));
            }
            0x8a | 0x8b => {
                let n = self.le(if op == 0x8a { 1 } else { 4 })?;
                if n > 8 {
                    return Err(format!(
                        "an integer of {n} bytes is wider than the 64 bits read"
                    ));
                }
                let b = self.take(n)?;
                let mut v = b.iter().rev().fold(0u64, |v, &x| (v << 8) | u64::from(x));
                if n > 0 && n < 8 && b[n as usize - 1] & 0x80 != 0 {
                    v |= u64::MAX << (8 * n);
                }
                return self.push(Py::Int(v as i64));
            }
            b'C' | b'U' => {
                let v = self.bytes(1)?;
                return self.push(v);
            }
            b'B' | b'T' => {
                let v = self.bytes(4)?;
                return self.push(v);
            }
            0x8e | 0x96 => {
                let v = self.bytes(8)?;
                return self.push(v);
            }
            0x8c | b'X' | 0x8d => {
                let v = self.text(match op {
                    0x8c => 1,
                    b'X' => 4,
                    _ => 8,
                })?;
                return self.push(v);
            }
            b')' => return self.push(Py::Tuple(Vec::new())),
            b']' | 0x8f => return self.push(Py::List(Vec::new())),
            b'}' => return self.push(Py::Dict(Vec::new())),
            0x85..=0x87 => {
                let mut items = Vec::new();
                for _ in 0..op - 0x84 {
                    items.push(self.pop()?);
                }
                items.reverse();
                return self.push(Py::Tuple(items));
            }
            b't' => {
                let items = self.pop_mark()?;
                return self.push(Py::Tuple(items));
            }
            b'l' | 0x91 => {
                let items = self.pop_mark()?;
                return self.push(Py::List(items));
            }
            b'd' => {
                let items = self.pop_mark()?;
                self.push(Py::Dict(Vec::new()))?;
                self.set_items(items)?;
            }
            b'a' => {
                let v = self.pop()?;
                self.append(vec![v])?;
            }
            b'e' | 0x90 => {
                let items = self.pop_mark()?;
                self.append(items)?;
            }
            b's' => {
                let v = self.pop()?;
                let k = self.pop()?;
                self.set_items(vec![k, v])?;
            }
            b'u' => {
                let items = self.pop_mark()?;
                self.set_items(items)?;
            }
            b'c' => {
                let module = self.line()?;
                let name = self.line()?;
                return self.push(Py::Global(format!("{module}.{name}")));
            }
            0x93 => {
                let name = self.pop()?;
                let module = self.pop()?;
                let (Py::Str(m), Py::Str(n)) = (module, name) else {
                    return Err("STACK_GLOBAL is not given two strings".into());
                };
                return self.push(Py::Global(format!("{m}.{n}")));
            }
            b'R' | 0x81 => {
                let args = self.pop()?;
                let callee = self.pop()?;
                return self.push(Self::call(callee, args));
            }
            0x92 => {
                let kwargs = self.pop()?;
                let args = self.pop()?;
                let callee = self.pop()?;
                return self.push(Self::call(callee, Py::Tuple(vec![args, kwargs])));
            }
            b'b' => {
                let state = self.pop()?;
                match self.pop()? {
                    // A dict's state is its attributes (an OrderedDict's
                    // `_metadata`), not items: dropped.
                    d @ (Py::Dict(_) | Py::List(_)) => return self.push(d),
                    Py::Object(mut o) => {
                        o.state = Some(state);
                        return self.push(Py::Object(o));
                    }
                    other => return Err(format!("BUILD sets the state of {}", other.kind())),
                }
            }
            b'Q' => {
                let id = self.pop()?;
                return self.push(Py::Persistent(Box::new(id)));
            }
            b'P' => {
                let id = self.line()?;
                return self.push(Py::Persistent(Box::new(Py::Str(id))));
            }
            other => return Err(format!("pickle opcode 0x{other:02x} is not read")),
        }
        Ok(None)
    }
}

/// Builders of PyTorch-like pickles and zips, for the tests of this crate
/// and of the crates that read checkpoints through it (feature
/// `test-fixtures`). They panic on I/O errors: test code only.
#[cfg(any(test, feature = "test-fixtures"))]
#[allow(clippy::unwrap_used, clippy::missing_panics_doc)]
pub mod fixtures {
    use std::io::Write;
    use std::path::{Path, PathBuf};

    /// A pickled string (BINUNICODE).
    pub fn s(text: &str) -> Vec<u8> {
        let mut out = b"X".to_vec();
        out.extend((text.len() as u32).to_le_bytes());
        out.extend(text.as_bytes());
        out
    }

    /// A pickled int (BININT).
    pub fn int(v: i32) -> Vec<u8> {
        let mut out = b"J".to_vec();
        out.extend(v.to_le_bytes());
        out
    }

    /// A `_rebuild_tensor_v2` call as `torch.save` pickles it.
    pub fn tensor_call(
        class: &str,
        key: &str,
        stored: i32,
        offset: i32,
        size: &[i32],
        stride: &[i32],
    ) -> Vec<u8> {
        let mut p = b"ctorch._utils\n_rebuild_tensor_v2\n((".to_vec();
        p.extend(s("storage"));
        p.extend(format!("ctorch\n{class}\n").bytes());
        p.extend(s(key));
        p.extend(s("cpu"));
        p.extend(int(stored));
        p.extend(b"tQ");
        p.extend(int(offset));
        for dims in [size, stride] {
            p.push(b'(');
            dims.iter().for_each(|&d| p.extend(int(d)));
            p.push(b't');
        }
        p.extend(b"\x89ccollections\nOrderedDict\n)RtR");
        p
    }

    /// An OrderedDict of `(name, pickled value)`.
    pub fn ordered_dict(entries: &[(&str, Vec<u8>)]) -> Vec<u8> {
        let mut p = b"ccollections\nOrderedDict\nq\x00)Rq\x01(".to_vec();
        for (name, value) in entries {
            p.extend(s(name));
            p.extend(value);
        }
        p.extend(b"u}b");
        p
    }

    /// A zip of stored entries, written as `dir/x.pt`.
    pub fn zip_file(dir: &Path, entries: &[(&str, &[u8])]) -> PathBuf {
        let path = dir.join("x.pt");
        let mut w = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        for (name, bytes) in entries {
            w.start_file(*name, opts).unwrap();
            w.write_all(bytes).unwrap();
        }
        w.finish().unwrap();
        path
    }

    /// A plain `torch.save` of a state dict in `dir`, in this order:
    /// `z.half` f16 `[1.5, -2.0]`; `a.double` f64 `[[3.0], [7.0]]` (storage
    /// offset 1); `m.num_batches_tracked` an int64 scalar `-1` (offset 1);
    /// `b.mask` bool `[true, false]`.
    pub fn plain_state_dict(dir: &Path) -> PathBuf {
        let f16: Vec<u8> = [0x3e00u16, 0xc000]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let f64s: Vec<u8> = [0.25f64, 3.0, 7.0]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let longs: Vec<u8> = [5i64, -1].iter().flat_map(|x| x.to_le_bytes()).collect();
        let pickle = [
            b"\x80\x02".to_vec(),
            ordered_dict(&[
                ("z.half", tensor_call("HalfStorage", "0", 2, 0, &[2], &[1])),
                (
                    "a.double",
                    tensor_call("DoubleStorage", "1", 3, 1, &[2, 1], &[1, 1]),
                ),
                (
                    "m.num_batches_tracked",
                    tensor_call("LongStorage", "2", 2, 1, &[], &[]),
                ),
                ("b.mask", tensor_call("BoolStorage", "3", 2, 0, &[2], &[1])),
            ]),
            b".".to_vec(),
        ]
        .concat();
        pt(
            dir,
            &pickle,
            &[("0", &f16), ("1", &f64s), ("2", &longs), ("3", &[1, 0])],
        )
    }

    /// A `torch.save`-like zip in `dir`: `pickle` as its `data.pkl`, and
    /// each `(key, bytes)` as a storage.
    pub fn pt(dir: &Path, pickle: &[u8], storages: &[(&str, &[u8])]) -> PathBuf {
        let names: Vec<String> = storages
            .iter()
            .map(|(k, _)| format!("x/data/{k}"))
            .collect();
        let mut entries = vec![("x/data.pkl", pickle), ("x/byteorder", &b"little"[..])];
        entries.extend(
            names
                .iter()
                .zip(storages)
                .map(|(n, (_, b))| (n.as_str(), *b)),
        );
        zip_file(dir, &entries)
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;

    fn shared(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../../shared/interop/lightning")
            .join(name)
    }

    fn err(path: &Path) -> String {
        let e = read(path).unwrap_err().to_string();
        assert!(
            e.starts_with(&path.display().to_string()) && !e.contains('\n'),
            "{e}"
        );
        e
    }

    #[test]
    fn a_lightning_checkpoint_reads_as_entries_hparams_and_version() {
        let ckpt = shared("gw.ckpt");
        assert!(is_torch_zip(&ckpt).unwrap());
        assert!(!is_torch_zip(&shared("gw_state_dict.safetensors")).unwrap());
        let got = read(&ckpt).unwrap();
        assert_eq!(got.tensors.len(), 73);
        for t in &got.tensors {
            let n: usize = t.shape.iter().product();
            assert_eq!(t.bytes().len(), n * t.element.size(), "{}", t.name);
        }
        let l = got.lightning.unwrap();
        let hp = l.hyper_parameters.unwrap();
        assert_eq!(hp["workspace_dim"], 16);
        assert_eq!(
            hp["fusion_activation_fn"],
            serde_json::json!({"__global__": "torch.tanh"})
        );
        assert_eq!(l.version.as_deref(), Some("2.6.6"));
        assert_eq!(l.migrations, None);
    }

    #[test]
    fn a_plain_state_dict_reads_in_every_dtype_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = plain_state_dict(dir.path());
        let got = read(&path).unwrap();
        let t = &got.tensors;
        let names: Vec<&str> = t.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            ["z.half", "a.double", "m.num_batches_tracked", "b.mask"]
        );
        let elements: Vec<Element> = t.iter().map(|t| t.element).collect();
        assert_eq!(
            elements,
            [Element::F16, Element::F64, Element::I64, Element::Bool]
        );
        // 1.5 and -2.0 as IEEE half floats.
        assert_eq!(t[0].bytes(), [0x00, 0x3e, 0x00, 0xc0]);
        assert_eq!((t[1].shape.as_slice(), t[1].offset), (&[2, 1][..], 1));
        assert_eq!(t[1].stride, [1, 1]);
        let f64s: Vec<u8> = [3.0f64, 7.0].iter().flat_map(|x| x.to_le_bytes()).collect();
        assert_eq!(t[1].bytes(), f64s);
        assert!(t[2].shape.is_empty());
        assert_eq!(t[2].bytes(), (-1i64).to_le_bytes());
        assert_eq!((t[3].bytes(), t[3].storage.as_str()), (&[1u8, 0][..], "3"));
        assert!(got.lightning.is_none());
    }

    #[test]
    fn a_pickle_that_would_run_commands_runs_none() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("ran");
        let m = marker.display().to_string();
        let mut hp = b"}(".to_vec();
        for (key, global, arg) in [
            ("a", "posix\nsystem", format!("touch {m}")),
            ("b", "os\nsystem", format!("touch {m}")),
            ("c", "builtins\nexec", format!("open('{m}', 'w')")),
        ] {
            hp.extend(s(key));
            hp.extend(format!("c{global}\n").bytes());
            hp.extend(s(&arg));
            hp.extend(b"\x85R");
        }
        hp.push(b'u');
        let pickle = [
            b"\x80\x02}(".to_vec(),
            s("state_dict"),
            ordered_dict(&[]),
            s("hyper_parameters"),
            hp,
            s(MIGRATION_KEY),
            b"]".to_vec(),
            s("5_del_coef_buffers"),
            b"au.".to_vec(),
        ]
        .concat();
        let got = read(&pt(dir.path(), &pickle, &[])).unwrap();
        assert!(!marker.exists());
        assert!(got.tensors.is_empty());
        let l = got.lightning.unwrap();
        let hp = l.hyper_parameters.unwrap();
        assert_eq!(
            hp["a"],
            serde_json::json!({"__global__": "posix.system", "args": [format!("touch {m}")]})
        );
        assert_eq!(hp["c"]["__global__"], "builtins.exec");
        assert_eq!(l.migrations, Some(vec!["5_del_coef_buffers".to_owned()]));
    }

    #[test]
    fn broken_files_are_one_clear_error_each() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("raw.pt");
        std::fs::write(&raw, b"\x80\x02}q\x00.").unwrap();
        assert!(err(&raw).contains("not a zip archive"));
        std::fs::write(&raw, b"PK\x03\x04 this is not a zip").unwrap();
        assert!(err(&raw).contains("is not a readable zip archive"));
        let e = err(&zip_file(dir.path(), &[("x/other", b"")]));
        assert!(e.contains("holds no <archive>/data.pkl"), "{e}");

        let one = |class: &str, stored: i32, offset: i32, size: &[i32], stride: &[i32]| {
            let t = tensor_call(class, "0", stored, offset, size, stride);
            [
                b"\x80\x02".to_vec(),
                ordered_dict(&[("w", t)]),
                b".".to_vec(),
            ]
            .concat()
        };
        let e = err(&pt(
            dir.path(),
            &one("FloatStorage", 4, 0, &[4], &[1]),
            &[("0", &[0; 8])],
        ));
        assert!(e.contains("tensor w: its storage data/0 is too short: 8 bytes, where 4 elements of 4 bytes need 16"), "{e}");
        let e = err(&pt(dir.path(), &one("FloatStorage", 4, 0, &[4], &[1]), &[]));
        assert!(
            e.contains("tensor w: its storage x/data/0 is missing"),
            "{e}"
        );
        let e = err(&pt(
            dir.path(),
            &one("FloatStorage", 4, 2, &[4], &[1]),
            &[("0", &[0; 16])],
        ));
        assert!(
            e.contains("reads elements 2..6 of storage 0, which declares 4"),
            "{e}"
        );
        let e = err(&pt(
            dir.path(),
            &one("ComplexFloatStorage", 1, 0, &[1], &[1]),
            &[("0", &[0; 8])],
        ));
        assert!(
            e.contains("tensor w: has storage type torch.ComplexFloatStorage, a dtype not read"),
            "{e}"
        );
        let e = err(&pt(
            dir.path(),
            &one("FloatStorage", 4, 0, &[2, 2], &[1, 2]),
            &[("0", &[0; 16])],
        ));
        assert!(e.contains("is not contiguous"), "{e}");

        // 200 000 nested lists: refused by the scan, quickly.
        let mut deep = b"\x80\x02".to_vec();
        deep.extend(b"]".repeat(200_000));
        deep.extend(b"a".repeat(199_999));
        deep.push(b'.');
        let start = std::time::Instant::now();
        let e = err(&pt(dir.path(), &deep, &[]));
        assert!(
            e.contains("refused before reading: containers nest deeper than 64 levels"),
            "{e}"
        );
        // One memoised megabyte copied 4 000 times: over the size budget.
        let mut big = b"\x80\x02B".to_vec();
        big.extend((1u32 << 20).to_le_bytes());
        big.resize(big.len() + (1 << 20), 0);
        big.extend(b"q\x00]");
        big.extend(b"h\x00a".repeat(4000));
        big.push(b'.');
        let e = err(&pt(dir.path(), &big, &[]));
        assert!(e.contains("would materialise more than"), "{e}");
        assert!(start.elapsed().as_secs() < 10);
    }
}
