//! A linear pre-pass over a pickle before `serde-pickle` decodes it.
//!
//! `serde-pickle` builds its whole value tree before a visitor sees any of
//! it, and builds, clones and drops that tree recursively: a pickle of a
//! few hundred kilobytes can nest lists 200 000 levels deep (the drop
//! overflows the stack), open a MARK that reserves 4 KiB per input byte,
//! clone one memoised 8 MiB value per 4 input bytes, or hand `num-bigint`
//! a text integer of millions of digits (quadratic). [`scan`] walks the
//! opcodes once, in constant stack, simulating only the shape of the
//! unpickler's stack: the kind of each value, how deep its containers
//! nest, how many bytes `serde-pickle` materialises for it (counted as it
//! is built, clones of memo entries included), the memo, and the number of
//! calls. It refuses, with the byte where it stopped, any pickle that
//! exceeds a bound, and any that `serde-pickle` would reject in a way that
//! formats a whole value into its message (an APPEND to something that is
//! not a list, a REDUCE of something that is not a tuple). What passes is
//! decoded by `serde-pickle` in bounded time, memory and stack.

use std::collections::HashMap;

/// Deepest nesting of containers in the value tree `serde-pickle` builds
/// (memo references count as leaves). A domain split nests about 6 deep.
pub(crate) const MAX_DEPTH: u32 = 64;

/// Longest integer read, in decimal digits (INT, LONG) or bytes (LONG1,
/// LONG4): a domain split holds only 64-bit integers (20 digits).
pub(crate) const MAX_INT_DIGITS: usize = 64;

/// Most calls (GLOBAL, STACK_GLOBAL, REDUCE, INST, OBJ, NEWOBJ, NEWOBJ_EX):
/// a domain split makes about 3 per group of domains.
pub(crate) const MAX_CALLS: u32 = 10_000;

/// Longest module or attribute name of a GLOBAL or INST.
const MAX_NAME_BYTES: usize = 1024;

/// Bytes of one value in `serde-pickle`'s tree (its `Value` enum).
const VALUE_BYTES: u64 = 32;

/// Bytes a MARK reserves (`serde-pickle` opens a stack of 128 values).
const MARK_BYTES: u64 = 128 * VALUE_BYTES + 24;

/// Bytes of one memo entry (key, value and map overhead).
const MEMO_BYTES: u64 = 64;

/// Strings up to this length are kept by the scan (global names).
const TEXT_KEPT: usize = 64;

/// What one kind of file may hold: its bounds, what its messages call it,
/// and whether PyTorch's opcodes and objects are accepted.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rules {
    /// Deepest nesting of containers.
    pub(crate) depth: u32,
    /// Most calls (GLOBAL, STACK_GLOBAL, REDUCE, INST, OBJ, NEWOBJ, BINPERSID, ...).
    pub(crate) calls: u32,
    /// Bytes one MARK costs the decoder.
    pub(crate) mark_bytes: u64,
    /// The file, for messages ("a domain split").
    pub(crate) what: &'static str,
    /// How deep such a file nests, for messages.
    pub(crate) usual_depth: &'static str,
    /// How many calls such a file makes, for messages.
    pub(crate) usual_calls: &'static str,
    /// PyTorch's pickles (`torch.save`): persistent ids (BINPERSID, PERSID)
    /// are read, and what REDUCE, NEWOBJ or BUILD make is an object that
    /// keeps its arguments and state and takes items (an `OrderedDict`, a
    /// dict subclass), as an interpreter that calls nothing builds it.
    pub(crate) torch: bool,
}

/// The rules of shimmer-ssd's domain splits, decoded by `serde-pickle`.
pub(crate) const DOMAIN_SPLIT: Rules = Rules {
    depth: MAX_DEPTH,
    calls: MAX_CALLS,
    mark_bytes: MARK_BYTES,
    what: "a domain split",
    usual_depth: "about 6",
    usual_calls: "a few per group",
    torch: false,
};

/// The kinds of value `serde-pickle` distinguishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Leaf,
    BigInt,
    Bytes,
    Str,
    List,
    Tuple,
    Set,
    FrozenSet,
    Dict,
    Global(Global),
    /// What a call builds in a PyTorch pickle (see [`Rules::torch`]).
    Object,
}

/// The globals `serde-pickle` knows (its `Global`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Global {
    Set,
    Frozenset,
    List,
    Bytearray,
    Int,
    Encode,
    Reconst,
    Other,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Leaf => "a number, bool or None",
            Kind::BigInt => "a long integer",
            Kind::Bytes => "bytes",
            Kind::Str => "a string",
            Kind::List => "a list",
            Kind::Tuple => "a tuple",
            Kind::Set => "a set",
            Kind::FrozenSet => "a frozenset",
            Kind::Dict => "a dict",
            Kind::Global(_) => "a global",
            Kind::Object => "an object",
        }
    }
}

/// What the scan knows of a value: its kind, the bytes a clone of it
/// costs, and the depth of its containers (1 for a leaf).
#[derive(Clone, Copy, Debug)]
struct Flat {
    kind: Kind,
    bytes: u64,
    depth: u32,
}

impl Flat {
    fn new(kind: Kind, bytes: u64) -> Self {
        Self {
            kind,
            bytes,
            depth: 1,
        }
    }
}

/// An element of a tuple, as REDUCE needs it.
#[derive(Clone, Copy, Debug)]
enum Elem {
    Ref(u32),
    Val(Flat),
}

/// More about a value than [`Flat`], for the few that need it.
#[derive(Clone, Debug)]
enum Info {
    /// A short string's text (a global's module or name).
    Text(Box<[u8]>),
    /// A tuple's first, second-to-last and last elements.
    Tuple([Option<Elem>; 3]),
}

/// A value on the simulated stack or in the memo.
#[derive(Clone, Debug)]
struct Summary {
    flat: Flat,
    info: Option<Box<Info>>,
}

impl Summary {
    fn plain(kind: Kind, bytes: u64) -> Self {
        Self {
            flat: Flat::new(kind, bytes),
            info: None,
        }
    }
}

/// A stack entry: a memo reference or a value.
#[derive(Clone, Debug)]
enum Slot {
    Ref(u32),
    Val(Summary),
}

impl Slot {
    /// The slot as an element of a container.
    fn elem(&self) -> Elem {
        match self {
            Slot::Ref(id) => Elem::Ref(*id),
            Slot::Val(s) => Elem::Val(s.flat),
        }
    }

    /// Bytes and depth the slot adds to a container holding it.
    fn weight(&self) -> (u64, u32) {
        match self {
            Slot::Ref(_) => (VALUE_BYTES, 1),
            Slot::Val(s) => (s.flat.bytes, s.flat.depth),
        }
    }
}

/// What a pickle that passed the scan materialises while `serde-pickle`
/// parses it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Scanned {
    /// Bytes counted (an upper estimate).
    pub(crate) bytes: u64,
}

/// The simulated unpickler.
struct Scan<'a> {
    data: &'a [u8],
    pos: usize,
    /// Where the opcode being simulated starts (for messages).
    at: usize,
    stack: Vec<Slot>,
    /// Stack lengths at each open MARK.
    marks: Vec<usize>,
    memo: HashMap<u32, Summary>,
    spent: u64,
    budget: u64,
    calls: u32,
    rules: Rules,
}

type Step<T = ()> = std::result::Result<T, String>;

/// Walks the pickle `data` (up to its STOP) and returns what decoding it
/// costs, or why it is refused: `budget` bytes materialised at most, under
/// the rules of a domain split.
pub(crate) fn scan(data: &[u8], budget: u64) -> Step<Scanned> {
    scan_with(data, budget, DOMAIN_SPLIT)
}

/// [`scan`] under the given rules.
pub(crate) fn scan_with(data: &[u8], budget: u64, rules: Rules) -> Step<Scanned> {
    let mut s = Scan {
        data,
        pos: 0,
        at: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        spent: 0,
        budget,
        calls: 0,
        rules,
    };
    s.run()?;
    Ok(Scanned { bytes: s.spent })
}

impl Scan<'_> {
    fn fail<T>(&self, what: impl std::fmt::Display) -> Step<T> {
        Err(format!("{what} (at byte {} of the pickle)", self.at))
    }

    fn spend(&mut self, bytes: u64) -> Step {
        self.spent = self.spent.saturating_add(bytes);
        if self.spent > self.budget {
            return self.fail(format_args!(
                "decoding it would materialise more than {} bytes, more than {} of this size needs",
                self.budget, self.rules.what
            ));
        }
        Ok(())
    }

    fn call(&mut self) -> Step {
        self.calls += 1;
        let Rules {
            calls,
            what,
            usual_calls,
            ..
        } = self.rules;
        if self.calls > calls {
            return self.fail(format_args!(
                "it makes more than {calls} calls (GLOBAL, REDUCE, ...); {what} makes {usual_calls}"
            ));
        }
        Ok(())
    }

    fn take(&mut self, n: u64) -> Step<&[u8]> {
        let left = self.data.len() - self.pos;
        match usize::try_from(n) {
            Ok(n) if n <= left => {
                let out = &self.data[self.pos..self.pos + n];
                self.pos += n;
                Ok(out)
            }
            _ => self.fail(format_args!(
                "truncated: an opcode needs {n} bytes, {left} remain"
            )),
        }
    }

    fn byte(&mut self) -> Step<u8> {
        Ok(self.take(1)?[0])
    }

    fn le(&mut self, n: usize) -> Step<u64> {
        let b = self.take(n as u64)?;
        Ok(b.iter().rev().fold(0u64, |v, &x| (v << 8) | u64::from(x)))
    }

    /// A text argument as `serde-pickle` reads it: up to a newline or the
    /// end, its last byte dropped, then a trailing `\r`.
    fn line(&mut self, max: Option<usize>) -> Step<&[u8]> {
        let rest = &self.data[self.pos..];
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .map_or(rest.len(), |i| i + 1);
        let mut text = &rest[..end];
        self.pos += end;
        text = text.split_last().map_or(text, |(_, t)| t);
        if let Some((b'\r', t)) = text.split_last() {
            text = t;
        }
        if let Some(max) = max
            && text.len() > max
        {
            return self.fail(format_args!(
                "a text argument of {} bytes is longer than the {max} allowed",
                text.len()
            ));
        }
        Ok(text)
    }

    fn frame_start(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn push(&mut self, slot: Slot) -> Step {
        if let Slot::Val(s) = &slot
            && s.flat.depth > self.rules.depth
        {
            return self.fail(self.too_deep());
        }
        self.stack.push(slot);
        Ok(())
    }

    /// Pushes a new value of `bytes` materialised bytes.
    fn push_new(&mut self, kind: Kind, bytes: u64) -> Step {
        self.spend(bytes)?;
        self.push(Slot::Val(Summary::plain(kind, bytes)))
    }

    fn too_deep(&self) -> String {
        let Rules {
            depth,
            what,
            usual_depth,
            ..
        } = self.rules;
        format!("containers nest deeper than {depth} levels; {what} nests {usual_depth}")
    }

    fn pop(&mut self) -> Step<Slot> {
        if self.stack.len() <= self.frame_start() {
            return self.fail("the stack is empty where the opcode needs a value");
        }
        match self.stack.pop() {
            Some(s) => Ok(s),
            None => self.fail("the stack is empty where the opcode needs a value"),
        }
    }

    fn pop_mark(&mut self) -> Step<Vec<Slot>> {
        let Some(start) = self.marks.pop() else {
            return self.fail("an opcode needs a MARK that was never set");
        };
        Ok(self.stack.split_off(start))
    }

    fn memo_get(&self, id: u32) -> Step<&Summary> {
        match self.memo.get(&id) {
            Some(s) => Ok(s),
            None => self.fail(format_args!("memo entry {id} is used before it is set")),
        }
    }

    /// The value behind a slot, cloned out of the memo for a reference
    /// (`serde-pickle`'s `resolve`, which copies the value).
    fn resolve(&mut self, slot: Slot) -> Step<Summary> {
        match slot {
            Slot::Val(s) => Ok(s),
            Slot::Ref(id) => {
                let s = self.memo_get(id)?.clone();
                self.spend(s.flat.bytes)?;
                Ok(s)
            }
        }
    }

    fn resolve_elem(&mut self, elem: Option<Elem>) -> Step<Option<Flat>> {
        Ok(match elem {
            None => None,
            Some(Elem::Val(f)) => Some(f),
            Some(Elem::Ref(id)) => Some(self.resolve(Slot::Ref(id))?.flat),
        })
    }

    /// The value the top slot stands for, which APPEND and the like modify
    /// in place (in the memo for a reference, as `serde-pickle` does).
    fn top_mut(&mut self) -> Step<&mut Flat> {
        if self.stack.len() <= self.frame_start() {
            return self.fail("the stack is empty where the opcode needs a container");
        }
        let at = self.at;
        match self.stack.last_mut() {
            Some(Slot::Val(s)) => Ok(&mut s.flat),
            Some(Slot::Ref(id)) => {
                let id = *id;
                match self.memo.get_mut(&id) {
                    Some(s) => Ok(&mut s.flat),
                    None => Err(format!(
                        "memo entry {id} is used before it is set (at byte {at} of the pickle)"
                    )),
                }
            }
            None => Err(format!(
                "the stack is empty where the opcode needs a container (at byte {at} of the pickle)"
            )),
        }
    }

    /// Adds `items` (bytes, depth) to the container on top, which must be
    /// of `kind`; `overhead` new bytes for the container's growth.
    fn extend_top(&mut self, kind: Kind, bytes: u64, depth: u32, overhead: u64) -> Step {
        self.spend(overhead)?;
        let at = self.at;
        let max_depth = self.rules.depth;
        let deep = self.too_deep();
        let top = self.top_mut()?;
        if top.kind != kind && top.kind != Kind::Object {
            let found = top.kind.name();
            return Err(format!(
                "an opcode adds to {found}, where it needs {} (at byte {at} of the pickle)",
                kind.name()
            ));
        }
        top.bytes = top.bytes.saturating_add(bytes).saturating_add(overhead);
        top.depth = top.depth.max(depth.saturating_add(1));
        if top.depth > max_depth {
            return Err(format!("{deep} (at byte {at} of the pickle)"));
        }
        Ok(())
    }

    /// Bytes and depth `slot` adds to a container holding it. An
    /// interpreter of PyTorch's rules copies a memo reference into the
    /// container: it weighs what it refers to.
    fn weigh(&self, slot: &Slot) -> Step<(u64, u32)> {
        match slot {
            Slot::Ref(id) if self.rules.torch => {
                let flat = self.memo_get(*id)?.flat;
                Ok((flat.bytes, flat.depth))
            }
            _ => Ok(slot.weight()),
        }
    }

    /// A container of `kind` holding `items` (their memory moved, the
    /// container's array `fresh` new bytes).
    fn container(&mut self, kind: Kind, items: &[Slot], fresh: u64) -> Step<Summary> {
        self.spend(VALUE_BYTES.saturating_add(fresh))?;
        let mut flat = Flat::new(kind, VALUE_BYTES);
        for item in items {
            let (bytes, depth) = self.weigh(item)?;
            flat.bytes = flat.bytes.saturating_add(bytes);
            flat.depth = flat.depth.max(depth.saturating_add(1));
        }
        let info = (kind == Kind::Tuple && !items.is_empty()).then(|| {
            let n = items.len();
            Box::new(Info::Tuple([
                items.first().map(Slot::elem),
                (n >= 2).then(|| items[n - 2].elem()),
                items.last().map(Slot::elem),
            ]))
        });
        Ok(Summary { flat, info })
    }

    fn push_container(&mut self, kind: Kind, items: Vec<Slot>, fresh: u64) -> Step {
        let s = self.container(kind, &items, fresh)?;
        self.push(Slot::Val(s))
    }

    fn string(&mut self, kind: Kind, len: u64) -> Step {
        let text = self.take(len)?;
        let info = (kind == Kind::Str && text.len() <= TEXT_KEPT)
            .then(|| Box::new(Info::Text(text.into())));
        let bytes = VALUE_BYTES.saturating_add(len);
        self.spend(bytes)?;
        self.push(Slot::Val(Summary {
            flat: Flat::new(kind, bytes),
            info,
        }))
    }

    fn binary_int(&mut self, len: u64) -> Step {
        if len > MAX_INT_DIGITS as u64 {
            return self.fail(format_args!(
                "it holds an integer of {len} bytes; {}'s fit in 8 (at most {MAX_INT_DIGITS} are read)",
                self.rules.what
            ));
        }
        self.take(len)?;
        self.push_new(Kind::BigInt, VALUE_BYTES + len)
    }

    fn text_number(&mut self, kind: Kind) -> Step {
        let start = self.pos;
        let rest = &self.data[start..];
        let len = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
        if len > MAX_INT_DIGITS + 2 {
            return self.fail(format_args!(
                "it holds a number written in {len} characters; {}'s have at most 20 digits (at most {MAX_INT_DIGITS} are read)",
                self.rules.what
            ));
        }
        let text = self.line(None)?;
        let kind = if kind == Kind::Leaf || text == b"00" || text == b"01" {
            Kind::Leaf
        } else {
            kind
        };
        let len = text.len() as u64;
        self.push_new(kind, VALUE_BYTES + 2 * len)
    }

    fn memo_index(&mut self, text: bool, width: usize) -> Step<u32> {
        if text {
            let line = self.line(Some(16))?;
            match std::str::from_utf8(line).ok().and_then(|t| t.parse().ok()) {
                Some(id) => Ok(id),
                None => self.fail("a memo index is not a number"),
            }
        } else {
            Ok(self.le(width)? as u32)
        }
    }

    fn memoize(&mut self, id: u32) -> Step {
        let item = self.pop()?;
        let value = self.resolve(item)?;
        self.spend(MEMO_BYTES)?;
        self.memo.insert(id, value);
        self.push(Slot::Ref(id))
    }

    fn get(&mut self, id: u32) -> Step {
        // Each reference is copied out of the memo when decoded.
        let bytes = self.memo_get(id)?.flat.bytes;
        self.spend(bytes.saturating_add(VALUE_BYTES))?;
        self.push(Slot::Ref(id))
    }

    fn global(module: &[u8], name: &[u8]) -> Kind {
        Kind::Global(match (module, name) {
            (b"_codecs", b"encode") => Global::Encode,
            (b"copy_reg" | b"copyreg", b"_reconstructor") => Global::Reconst,
            (b"__builtin__" | b"builtins", b"set") => Global::Set,
            (b"__builtin__" | b"builtins", b"frozenset") => Global::Frozenset,
            (b"__builtin__" | b"builtins", b"list") => Global::List,
            (b"__builtin__" | b"builtins", b"bytearray") => Global::Bytearray,
            (b"__builtin__" | b"builtins", b"int") => Global::Int,
            _ => Global::Other,
        })
    }

    fn stack_global(&mut self) -> Step {
        self.call()?;
        let name = self.pop()?;
        let name = self.resolve(name)?;
        let module = self.pop()?;
        let module = self.resolve(module)?;
        let text = |s: &Summary| match s.info.as_deref() {
            Some(Info::Text(t)) => Some(t.to_vec()),
            _ => None,
        };
        if name.flat.kind != Kind::Str || module.flat.kind != Kind::Str {
            return self.fail(format_args!(
                "STACK_GLOBAL names {} and {}, not two strings",
                module.flat.kind.name(),
                name.flat.kind.name()
            ));
        }
        let kind = match (text(&module), text(&name)) {
            (Some(m), Some(n)) => Self::global(&m, &n),
            _ => Kind::Global(Global::Other),
        };
        self.push_new(kind, VALUE_BYTES)
    }

    fn reduce(&mut self) -> Step {
        self.call()?;
        let args = self.pop()?;
        let args = self.resolve(args)?;
        if args.flat.kind != Kind::Tuple {
            return self.fail(format_args!(
                "REDUCE is given {} for arguments, not a tuple",
                args.flat.kind.name()
            ));
        }
        let callee = self.pop()?;
        let callee = self.resolve(callee)?;
        let Kind::Global(global) = callee.flat.kind else {
            return self.fail(format_args!(
                "REDUCE calls {}, not a global",
                callee.flat.kind.name()
            ));
        };
        if self.rules.torch {
            return self.push_object(vec![Slot::Val(callee), Slot::Val(args)]);
        }
        let [first, before_last, last] = match args.info.as_deref() {
            Some(Info::Tuple(e)) => *e,
            _ => [None, None, None],
        };
        let expect = |want: Kind, got: Option<Flat>, what: &str| match got {
            Some(f) if f.kind == want => Ok(f),
            _ => Err(format!("{what}() is not given {}", want.name())),
        };
        let result = match global {
            Global::Set | Global::Frozenset | Global::List => {
                let arg = self.resolve_elem(last)?;
                let (kind, what) = match global {
                    Global::Set => (Kind::Set, "set"),
                    Global::Frozenset => (Kind::FrozenSet, "frozenset"),
                    _ => (Kind::List, "list"),
                };
                let list = expect(Kind::List, arg, what).or_else(|e| self.fail(e))?;
                Flat { kind, ..list }
            }
            Global::Int => {
                let arg = self.resolve_elem(last)?;
                expect(Kind::BigInt, arg, "int").or_else(|e| self.fail(e))?
            }
            Global::Bytearray => match self.resolve_elem(first)? {
                Some(f) if f.kind == Kind::Bytes => f,
                Some(f) if f.kind == Kind::Str => {
                    self.spend(f.bytes)?;
                    Flat::new(Kind::Bytes, f.bytes)
                }
                _ => return self.fail("bytearray() is not given bytes or a string"),
            },
            Global::Encode => {
                let encoding = self.resolve_elem(last)?;
                expect(Kind::Str, encoding, "encode").or_else(|e| self.fail(e))?;
                let text = self.resolve_elem(before_last)?;
                let text = expect(Kind::Str, text, "encode").or_else(|e| self.fail(e))?;
                self.spend(text.bytes)?;
                Flat::new(Kind::Bytes, text.bytes)
            }
            Global::Reconst => {
                self.spend(VALUE_BYTES)?;
                Flat::new(Kind::Dict, VALUE_BYTES)
            }
            Global::Other => {
                self.spend(VALUE_BYTES)?;
                Flat::new(Kind::Global(Global::Other), VALUE_BYTES)
            }
        };
        self.push(Slot::Val(Summary {
            flat: result,
            info: None,
        }))
    }

    /// Pushes the object a call builds of `parts` (its callee, arguments
    /// and state), each resolved, as an interpreter that keeps them does.
    fn push_object(&mut self, parts: Vec<Slot>) -> Step {
        let mut resolved = Vec::with_capacity(parts.len());
        for part in parts {
            resolved.push(Slot::Val(self.resolve(part)?));
        }
        let s = self.container(Kind::Object, &resolved, 0)?;
        self.push(Slot::Val(s))
    }

    fn run(&mut self) -> Step {
        loop {
            self.at = self.pos;
            if self.pos >= self.data.len() {
                return self.fail("truncated: the pickle ends before its STOP");
            }
            let op = self.byte()?;
            match op {
                // PROTO
                0x80 => {
                    self.byte()?;
                }
                // FRAME
                0x95 => {
                    self.take(8)?;
                }
                // STOP
                b'.' => {
                    self.pop()?;
                    return Ok(());
                }
                // MARK
                b'(' => {
                    self.spend(self.rules.mark_bytes)?;
                    self.marks.push(self.stack.len());
                }
                // POP
                b'0' => {
                    if self.stack.len() <= self.frame_start() {
                        self.pop_mark()?;
                    } else {
                        self.pop()?;
                    }
                }
                // POP_MARK
                b'1' => {
                    self.pop_mark()?;
                }
                // DUP
                // DUP copies the value on top (out of the memo for a reference).
                b'2' => {
                    let top = self.pop()?;
                    self.push(top.clone())?;
                    let copy = match top {
                        Slot::Ref(id) => self.resolve(Slot::Ref(id))?,
                        Slot::Val(s) => {
                            self.spend(s.flat.bytes)?;
                            s
                        }
                    };
                    self.push(Slot::Val(copy))?;
                }
                // PUT, BINPUT, LONG_BINPUT, MEMOIZE
                b'p' => {
                    let id = self.memo_index(true, 0)?;
                    self.memoize(id)?;
                }
                b'q' => {
                    let id = self.memo_index(false, 1)?;
                    self.memoize(id)?;
                }
                b'r' => {
                    let id = self.memo_index(false, 4)?;
                    self.memoize(id)?;
                }
                0x94 => {
                    let id = self.memo.len() as u32;
                    self.memoize(id)?;
                }
                // GET, BINGET, LONG_BINGET
                b'g' => {
                    let id = self.memo_index(true, 0)?;
                    self.get(id)?;
                }
                b'h' => {
                    let id = self.memo_index(false, 1)?;
                    self.get(id)?;
                }
                b'j' => {
                    let id = self.memo_index(false, 4)?;
                    self.get(id)?;
                }
                // NONE, NEWFALSE, NEWTRUE
                b'N' | 0x88 | 0x89 => self.push_new(Kind::Leaf, VALUE_BYTES)?,
                // INT, LONG, FLOAT
                b'I' => self.text_number(Kind::Leaf)?,
                b'L' => self.text_number(Kind::BigInt)?,
                b'F' => self.text_number(Kind::Leaf)?,
                // STRING (bytes), UNICODE
                b'S' | b'V' => {
                    let len = self.line(None)?.len() as u64;
                    let kind = if op == b'S' { Kind::Bytes } else { Kind::Str };
                    // The line, then its decoding (up to 2 bytes a byte).
                    self.spend(len)?;
                    let info = if op == b'V' {
                        let start = self.at + 1;
                        decode_raw_unicode(&self.data[start..start + len as usize])
                            .map(|t| Box::new(Info::Text(t)))
                    } else {
                        None
                    };
                    let bytes = VALUE_BYTES + 2 * len;
                    self.spend(bytes)?;
                    self.push(Slot::Val(Summary {
                        flat: Flat::new(kind, bytes),
                        info,
                    }))?;
                }
                // BINFLOAT, BININT, BININT1, BININT2
                b'G' => {
                    self.take(8)?;
                    self.push_new(Kind::Leaf, VALUE_BYTES)?;
                }
                b'J' => {
                    self.take(4)?;
                    self.push_new(Kind::Leaf, VALUE_BYTES)?;
                }
                b'K' => {
                    self.take(1)?;
                    self.push_new(Kind::Leaf, VALUE_BYTES)?;
                }
                b'M' => {
                    self.take(2)?;
                    self.push_new(Kind::Leaf, VALUE_BYTES)?;
                }
                // LONG1, LONG4
                0x8a => {
                    let n = self.le(1)?;
                    self.binary_int(n)?;
                }
                0x8b => {
                    let n = self.le(4)? as u32 as i32;
                    if n < 0 {
                        return self.fail("a LONG4 has a negative length");
                    }
                    self.binary_int(n as u64)?;
                }
                // SHORT_BINBYTES, BINBYTES, BINBYTES8, BYTEARRAY8
                b'C' => {
                    let n = self.le(1)?;
                    self.string(Kind::Bytes, n)?;
                }
                b'B' => {
                    let n = self.le(4)?;
                    self.string(Kind::Bytes, n)?;
                }
                0x8e | 0x96 => {
                    let n = self.le(8)?;
                    self.string(Kind::Bytes, n)?;
                }
                // SHORT_BINSTRING, BINSTRING (bytes unless decoded)
                b'U' => {
                    let n = self.le(1)?;
                    self.string(Kind::Bytes, n)?;
                }
                b'T' => {
                    let n = self.le(4)? as u32 as i32;
                    if n < 0 {
                        return self.fail("a BINSTRING has a negative length");
                    }
                    self.string(Kind::Bytes, n as u64)?;
                }
                // SHORT_BINUNICODE, BINUNICODE, BINUNICODE8
                0x8c => {
                    let n = self.le(1)?;
                    self.string(Kind::Str, n)?;
                }
                b'X' => {
                    let n = self.le(4)?;
                    self.string(Kind::Str, n)?;
                }
                0x8d => {
                    let n = self.le(8)?;
                    self.string(Kind::Str, n)?;
                }
                // EMPTY_TUPLE, EMPTY_LIST, EMPTY_DICT, EMPTY_SET
                b')' => self.push_new(Kind::Tuple, VALUE_BYTES)?,
                b']' => self.push_new(Kind::List, VALUE_BYTES)?,
                b'}' => self.push_new(Kind::Dict, VALUE_BYTES)?,
                0x8f => self.push_new(Kind::Set, VALUE_BYTES)?,
                // TUPLE1, TUPLE2, TUPLE3
                0x85..=0x87 => {
                    let n = usize::from(op - 0x84);
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    self.push_container(Kind::Tuple, items, n as u64 * VALUE_BYTES)?;
                }
                // TUPLE, LIST, FROZENSET: the MARK's stack becomes the items.
                b't' | b'l' | 0x91 => {
                    let items = self.pop_mark()?;
                    let kind = match op {
                        b't' => Kind::Tuple,
                        b'l' => Kind::List,
                        _ => Kind::FrozenSet,
                    };
                    self.push_container(kind, items, 0)?;
                }
                // DICT
                b'd' => {
                    let items = self.pop_mark()?;
                    let pairs = items.len() / 2;
                    self.push_container(Kind::Dict, items, pairs as u64 * 2 * VALUE_BYTES)?;
                }
                // APPEND, SETITEM
                b'a' | b's' => {
                    let value = self.pop()?;
                    let (mut bytes, mut depth) = self.weigh(&value)?;
                    let kind = if op == b'a' {
                        Kind::List
                    } else {
                        let key = self.pop()?;
                        let (b, d) = self.weigh(&key)?;
                        bytes = bytes.saturating_add(b);
                        depth = depth.max(d);
                        Kind::Dict
                    };
                    let growth = if op == b'a' { 2 } else { 4 } * VALUE_BYTES;
                    self.extend_top(kind, bytes, depth, growth)?;
                }
                // APPENDS, SETITEMS, ADDITEMS
                b'e' | b'u' | 0x90 => {
                    let items = self.pop_mark()?;
                    let kind = match op {
                        b'e' => Kind::List,
                        b'u' => Kind::Dict,
                        _ => Kind::Set,
                    };
                    let (mut bytes, mut depth) = (0u64, 0u32);
                    for item in &items {
                        let (b, d) = self.weigh(item)?;
                        bytes = bytes.saturating_add(b);
                        depth = depth.max(d);
                    }
                    let growth = 2 * VALUE_BYTES * items.len() as u64;
                    self.extend_top(kind, bytes, depth, growth)?;
                }
                // GLOBAL
                b'c' => {
                    self.call()?;
                    let module = self.line(Some(MAX_NAME_BYTES))?.to_vec();
                    let name = self.line(Some(MAX_NAME_BYTES))?;
                    let kind = Self::global(&module, name);
                    let lines = (module.len() + name.len()) as u64;
                    self.push_new(kind, VALUE_BYTES + lines)?;
                }
                // STACK_GLOBAL, REDUCE
                0x93 => self.stack_global()?,
                b'R' => self.reduce()?,
                // INST: a class instance, read as an empty dict.
                b'i' => {
                    self.call()?;
                    let lines = self.line(Some(MAX_NAME_BYTES))?.len();
                    let lines = lines + self.line(Some(MAX_NAME_BYTES))?.len();
                    self.pop_mark()?;
                    self.push_new(Kind::Dict, VALUE_BYTES + lines as u64)?;
                }
                // OBJ
                b'o' => {
                    self.call()?;
                    self.pop_mark()?;
                    self.pop()?;
                    self.push_new(Kind::Dict, VALUE_BYTES)?;
                }
                // NEWOBJ, NEWOBJ_EX
                0x81 | 0x92 => {
                    self.call()?;
                    let n = if op == 0x81 { 2 } else { 3 };
                    let mut parts = Vec::with_capacity(n);
                    for _ in 0..n {
                        parts.push(self.pop()?);
                    }
                    if self.rules.torch {
                        self.push_object(parts)?;
                    } else {
                        self.push_new(Kind::Dict, VALUE_BYTES)?;
                    }
                }
                // BUILD: the state replaces the object (for PyTorch, it is
                // kept with the object).
                b'b' => {
                    let state = self.pop()?;
                    let object = self.pop()?;
                    if self.rules.torch {
                        self.push_object(vec![object, state])?;
                    } else {
                        self.push(state)?;
                    }
                }
                // BINPERSID, PERSID (PyTorch's storages): an object
                // standing for the id.
                b'Q' if self.rules.torch => {
                    self.call()?;
                    let id = self.pop()?;
                    self.push_object(vec![id])?;
                }
                b'P' if self.rules.torch => {
                    self.call()?;
                    let len = self.line(Some(MAX_NAME_BYTES))?.len() as u64;
                    self.push_new(Kind::Object, VALUE_BYTES + len)?;
                }
                other => {
                    return self.fail(format_args!(
                        "it uses pickle opcode 0x{other:02x}, which is not read ({} does not need it)",
                        self.rules.what
                    ));
                }
            }
        }
    }
}

/// The text of a short UNICODE argument (raw-unicode-escape: `\uXXXX`,
/// `\UXXXXXXXX`, other bytes as Latin-1), or `None` when it is long or
/// malformed.
fn decode_raw_unicode(line: &[u8]) -> Option<Box<[u8]>> {
    if line.len() > TEXT_KEPT {
        return None;
    }
    let mut out = String::new();
    let mut i = 0;
    while i < line.len() {
        let b = line[i];
        if b == b'\\' {
            let n = match line.get(i + 1) {
                Some(b'u') => 4,
                Some(b'U') => 8,
                _ => return None,
            };
            let hex = std::str::from_utf8(line.get(i + 2..i + 2 + n)?).ok()?;
            out.push(char::from_u32(u32::from_str_radix(hex, 16).ok()?)?);
            i += 2 + n;
        } else {
            out.push(char::from(b));
            i += 1;
        }
    }
    Some(out.into_bytes().into_boxed_slice())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUDGET: u64 = 1 << 24;

    #[test]
    fn a_split_shaped_pickle_passes_and_costs_little() {
        // {frozenset({'v'}): numpy-like ndarray state via REDUCE + BUILD}
        let mut p = b"\x80\x03}q\x00(cbuiltins\nfrozenset\nq\x01]q\x02X\x01\x00\x00\x00vq\x03a\x85q\x04Rq\x05".to_vec();
        p.extend(b"cnumpy.core.multiarray\n_reconstruct\nq\x06cnumpy\nndarray\nq\x07K\x00\x85q\x08C\x01bq\x09\x87q\x0aRq\x0b");
        p.extend(b"(K\x01K\x02\x85q\x0ch\x01\x89C\x10");
        p.extend([0u8; 16]);
        p.extend(b"tq\x0dbu.");
        let scanned = scan(&p, BUDGET).unwrap();
        assert!(scanned.bytes < 64 << 10, "{}", scanned.bytes);
    }

    #[test]
    fn nesting_fails_at_the_bound_in_constant_stack() {
        // Run on a thread with a small stack: the scan must not recurse.
        let e = std::thread::Builder::new()
            .stack_size(64 << 10)
            .spawn(|| {
                let mut p = b"\x80\x02".to_vec();
                p.extend(b"]".repeat(200_000));
                p.extend(b"a".repeat(199_999));
                p.push(b'.');
                scan(&p, BUDGET).unwrap_err()
            })
            .unwrap()
            .join()
            .unwrap();
        assert!(
            e.starts_with("containers nest deeper than 64 levels"),
            "{e}"
        );
        // 64 levels pass, 65 do not.
        for (levels, ok) in [(64usize, true), (65, false)] {
            let mut p = b"]".repeat(levels);
            p.extend(b"a".repeat(levels - 1));
            p.push(b'.');
            assert_eq!(scan(&p, BUDGET).is_ok(), ok, "{levels}");
        }
    }

    #[test]
    fn torch_rules_read_persistent_ids_and_objects_that_take_items() {
        // OrderedDict() taking an item whose value is a
        // _rebuild_tensor_v2 call on a persistent id, then BUILD.
        let mut p = b"\x80\x02ccollections\nOrderedDict\nq\x00)Rq\x01(X\x01\x00\x00\x00w".to_vec();
        p.extend(
            b"ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\nFloatStorage\n",
        );
        p.extend(
            b"X\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x04tQK\x00K\x04\x85K\x01\x85\x89)tRu}b.",
        );
        let torch = Rules {
            torch: true,
            ..DOMAIN_SPLIT
        };
        scan_with(&p, BUDGET, torch).unwrap();
        let e = scan(&p, BUDGET).unwrap_err();
        assert!(e.starts_with("it uses pickle opcode 0x51"), "{e}");
        // Memo references are copied into containers: a chain of lists
        // each holding the previous one nests as deep as it is long.
        let mut p = b"\x80\x02]\x94".to_vec();
        for i in 0..100u32 {
            p.extend(b"]j");
            p.extend(i.to_le_bytes());
            p.extend(b"a\x94");
        }
        p.push(b'.');
        scan(&p, BUDGET).unwrap();
        let e = scan_with(&p, BUDGET, torch).unwrap_err();
        assert!(
            e.starts_with("containers nest deeper than 64 levels"),
            "{e}"
        );
        // Objects keep their arguments: nesting them is bounded too.
        let mut p = b"\x80\x02".to_vec();
        for _ in 0..100 {
            p.extend(b"cm\nf\n");
        }
        p.extend(b")");
        p.extend(b"\x85R".repeat(100));
        p.push(b'.');
        let e = scan_with(&p, BUDGET, torch).unwrap_err();
        assert!(
            e.starts_with("containers nest deeper than 64 levels"),
            "{e}"
        );
    }

    #[test]
    fn memo_copies_are_counted_at_full_size() {
        let mut p = b"B".to_vec();
        p.extend((1u32 << 20).to_le_bytes());
        p.resize(p.len() + (1 << 20), 0);
        p.extend(b"\x94]");
        let base = {
            let mut q = p.clone();
            q.push(b'.');
            scan(&q, BUDGET).unwrap().bytes
        };
        p.extend(b"h\x00a".repeat(10));
        p.push(b'.');
        let with_refs = scan(&p, BUDGET).unwrap().bytes;
        assert!(with_refs - base >= 10 << 20, "{base} -> {with_refs}");
    }
}
