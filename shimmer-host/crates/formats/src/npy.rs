//! NumPy `.npy` files (format versions 1 to 3): the header is parsed by the
//! `npyz` crate, the data read in place from a memory map.
//!
//! Supported element types: `bool`, signed and unsigned integers of 1 to 8
//! bytes, `float16/32/64`, in either byte order; C or Fortran order.
//! Structured, string, complex, date and object arrays are refused with the
//! type named (object arrays hold pickles: see [`crate::domain_split`]).

use crate::array::{Layout, NumArray};
use crate::dtype::{ByteOrder, DType, Element};
use crate::error::{FormatError, Result, excerpt, excerpt_bytes, io_text};
use crate::file::{Mapped, map_regular};
use npyz::{Endianness, TypeChar};
use std::path::Path;
use std::sync::Arc;

/// The first bytes of every `.npy` file.
const MAGIC: &[u8] = b"\x93NUMPY";

/// Longest `.npy` header read, in bytes: NumPy's `_MAX_HEADER_SIZE`, the
/// default `max_header_size` above which `numpy.load` refuses a header as
/// unsafe to parse. It is checked before the header is read, so a file
/// declaring a 4 GiB header costs nothing.
pub const MAX_HEADER_BYTES: usize = 10_000;

/// Longest run of digits in a header: a dimension is at most 2^64 - 1
/// (20 digits); a longer number is refused before it is parsed.
const MAX_HEADER_DIGITS: usize = 20;

/// Most brackets in a header, quoted ones included, which bounds how deep
/// its parser recurses whatever its strings hide (a plain array's header
/// has 2).
const MAX_HEADER_BRACKETS: usize = 64;

/// A parsed `.npy` header: where the data starts and what it holds.
pub(crate) struct Header {
    /// Byte offset of the data.
    pub(crate) offset: usize,
    /// npyz's reading of the header.
    pub(crate) header: npyz::NpyHeader,
}

/// Parses the header of the `.npy` file whose bytes are `bytes`: its
/// length and text are checked first ([`MAX_HEADER_BYTES`], numbers of at
/// most 20 digits, brackets nested at most 32 deep), then `npyz` reads it.
pub(crate) fn header(path: &Path, bytes: &[u8]) -> Result<Header> {
    if !bytes.starts_with(MAGIC) {
        return Err(FormatError::new(
            path,
            "is not a NumPy .npy file (it does not start with \\x93NUMPY)",
        ));
    }
    let bad = |what: String| FormatError::new(path, what);
    let (len_bytes, start) = match bytes.get(6..8) {
        Some([1, 0]) => (2, 10),
        Some([2 | 3, 0]) => (4, 12),
        Some([major, minor]) => {
            return Err(bad(format!(
                "has .npy format version {major}.{minor}; versions 1.0, 2.0 and 3.0 are read"
            )));
        }
        _ => return Err(bad("is truncated inside its .npy preamble".to_string())),
    };
    let Some(len) = bytes.get(8..8 + len_bytes) else {
        return Err(bad("is truncated inside its .npy preamble".to_string()));
    };
    let len = len
        .iter()
        .rev()
        .fold(0usize, |n, &b| (n << 8) | usize::from(b));
    if len > MAX_HEADER_BYTES {
        return Err(bad(format!(
            "declares a .npy header of {len} bytes, over the {MAX_HEADER_BYTES} NumPy reads (its max_header_size)"
        )));
    }
    let Some(text) = bytes.get(start..start + len) else {
        return Err(bad(format!(
            "truncated: its .npy header promises {len} bytes, the file holds {} after the preamble",
            bytes.len().saturating_sub(start)
        )));
    };
    check_header_text(text).map_err(bad)?;
    let mut rest = bytes;
    let header = npyz::NpyHeader::from_reader(&mut rest).map_err(|e| {
        bad(format!(
            "has an unreadable .npy header: {} (header: {})",
            excerpt(&io_text(&e)),
            excerpt_bytes(text)
        ))
    })?;
    Ok(Header {
        offset: bytes.len() - rest.len(),
        header,
    })
}

/// Refuses header text whose numbers, brackets or shape no array has,
/// before `npyz` spends time (quadratic in a number's digits) or stack on
/// it, or multiplies a shape that overflows (which panics in a build with
/// overflow checks). Digits inside quoted strings are not numbers.
fn check_header_text(text: &[u8]) -> std::result::Result<(), String> {
    let brackets = text
        .iter()
        .filter(|b| matches!(b, b'(' | b'[' | b'{'))
        .count();
    if brackets > MAX_HEADER_BRACKETS {
        return Err(format!(
            "has a .npy header of {brackets} brackets, more than the {MAX_HEADER_BRACKETS} read (a plain array's has 2)"
        ));
    }
    let mut digits = 0;
    let mut quote = None;
    let mut escaped = false;
    for &b in text {
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == q {
                quote = None;
            }
            continue;
        }
        if b == b'\'' || b == b'"' {
            quote = Some(b);
        }
        digits = if b.is_ascii_digit() { digits + 1 } else { 0 };
        if digits > MAX_HEADER_DIGITS {
            let run = text
                .split(|c| !c.is_ascii_digit())
                .map(<[u8]>::len)
                .max()
                .unwrap_or(digits);
            return Err(format!(
                "has a .npy header holding a number of {run} digits; a dimension has at most {MAX_HEADER_DIGITS}"
            ));
        }
    }
    // The same parser npyz uses, on text now small and shallow.
    let text = text.strip_suffix(b"\n").unwrap_or(text);
    let Some(py_literal::Value::Dict(entries)) = std::str::from_utf8(text)
        .ok()
        .and_then(|t| t.parse::<py_literal::Value>().ok())
    else {
        return Ok(()); // npyz says what is wrong
    };
    for (key, value) in &entries {
        let (
            py_literal::Value::String(key),
            py_literal::Value::Tuple(dims) | py_literal::Value::List(dims),
        ) = (key, value)
        else {
            continue;
        };
        if key != "shape" {
            continue;
        }
        // npyz multiplies the dimensions in both orders, zeros last or first.
        let mut product = Some(1u64);
        let mut shown = Vec::new();
        for d in dims {
            let py_literal::Value::Integer(d) = d else {
                return Ok(());
            };
            let Ok(d) = u64::try_from(d) else {
                return Ok(());
            };
            shown.push(d);
            product = product.and_then(|p| p.checked_mul(d.max(1)));
        }
        if product.is_none() {
            return Err(format!(
                "declares shape {shown:?}, whose size overflows (more than 2^64 values)"
            ));
        }
    }
    Ok(())
}

/// The element type of an npyz type string, or why it is not supported.
fn dtype_of(ty: &npyz::TypeStr) -> std::result::Result<DType, String> {
    let size = ty.size_field();
    let element = match (ty.type_char(), size) {
        (TypeChar::Bool, 1) => Element::Bool,
        (TypeChar::Int, 1) => Element::I8,
        (TypeChar::Int, 2) => Element::I16,
        (TypeChar::Int, 4) => Element::I32,
        (TypeChar::Int, 8) => Element::I64,
        (TypeChar::Uint, 1) => Element::U8,
        (TypeChar::Uint, 2) => Element::U16,
        (TypeChar::Uint, 4) => Element::U32,
        (TypeChar::Uint, 8) => Element::U64,
        (TypeChar::Float, 2) => Element::F16,
        (TypeChar::Float, 4) => Element::F32,
        (TypeChar::Float, 8) => Element::F64,
        (TypeChar::Object, _) => {
            return Err("holds Python objects (a pickle), not numbers".to_string());
        }
        (TypeChar::UnicodeStr | TypeChar::ByteStr, _) => {
            return Err(format!(
                "holds strings (dtype {}), not numbers",
                excerpt(&ty.to_string())
            ));
        }
        _ => {
            return Err(format!(
                "has dtype {}, which is not supported: use bool, (u)int8..64 or float16/32/64",
                excerpt(&ty.to_string())
            ));
        }
    };
    let order = match ty.endianness() {
        Endianness::Big => ByteOrder::Big,
        Endianness::Little | Endianness::Irrelevant => ByteOrder::Little,
    };
    Ok(DType { element, order })
}

/// Opens the `.npy` file at `path` as a numeric array read in place.
///
/// # Errors
/// A file that is missing, not regular, not a `.npy` file, truncated, or of
/// an unsupported element type; each message names the file.
pub fn open_npy(path: &Path) -> Result<NumArray> {
    let file = Arc::new(map_regular(path)?);
    let parsed = header(path, file.bytes())?;
    let dtype = match parsed.header.dtype() {
        npyz::DType::Plain(ty) => dtype_of(&ty).map_err(|e| FormatError::new(path, e))?,
        other => {
            return Err(FormatError::new(
                path,
                format!(
                    "holds a structured array ({}), not plain numbers",
                    excerpt(&other.descr())
                ),
            ));
        }
    };
    let layout = match parsed.header.order() {
        npyz::Order::C => Layout::C,
        npyz::Order::Fortran => Layout::Fortran,
    };
    let shape = parsed
        .header
        .shape()
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|_| FormatError::new(path, "has a shape too large to address"))?;
    NumArray::new(path, file, parsed.offset, dtype, shape, layout)
}

/// Where the pickle NumPy wrote starts in an object (`|O`) `.npy` file.
pub(crate) fn pickled_payload(path: &Path, file: &Mapped) -> Result<usize> {
    let parsed = header(path, file.bytes())?;
    if !parsed.header.uses_pickled_array() {
        let dtype = match parsed.header.dtype() {
            npyz::DType::Plain(ty) => excerpt(&ty.to_string()),
            other => excerpt(&other.descr()),
        };
        return Err(FormatError::new(
            path,
            format!("holds plain {dtype} numbers, not a pickled object"),
        ));
    }
    Ok(parsed.offset)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::write_npy;

    fn f32s(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn c_and_fortran_order_give_the_same_rows() {
        let dir = tempfile::tempdir().unwrap();
        // [[0, 1, 2], [3, 4, 5]] in both layouts.
        let c = dir.path().join("c.npy");
        write_npy(&c, "<f4", false, "(2, 3)", &f32s(&[0., 1., 2., 3., 4., 5.]));
        let f = dir.path().join("f.npy");
        write_npy(&f, "<f4", true, "(2, 3)", &f32s(&[0., 3., 1., 4., 2., 5.]));
        for path in [&c, &f] {
            let a = open_npy(path).unwrap();
            assert_eq!((a.rows(), a.row_len()), (2, 3));
            let mut out = [0.0; 6];
            a.read_rows(&[1, 0], None, &mut out).unwrap();
            assert_eq!(out, [3., 4., 5., 0., 1., 2.], "{}", path.display());
            let mut two = [0.0; 4];
            a.read_rows(&[0, 1], Some(&[2, 0]), &mut two).unwrap();
            assert_eq!(two, [2., 0., 5., 3.]);
        }
        // 3-D Fortran order: shape (2, 2, 2), element (i, j, k) = 100i + 10j + k.
        let mut data = Vec::new();
        for k in 0..2 {
            for j in 0..2 {
                for i in 0..2 {
                    data.push((100 * i + 10 * j + k) as f32);
                }
            }
        }
        let f3 = dir.path().join("f3.npy");
        write_npy(&f3, "<f4", true, "(2, 2, 2)", &f32s(&data));
        let a = open_npy(&f3).unwrap();
        let mut out = [0.0; 4];
        a.read_rows(&[1], None, &mut out).unwrap();
        assert_eq!(out, [100., 101., 110., 111.]);
    }

    #[test]
    fn one_dimensional_and_scalar_arrays_have_one_value_per_item() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("v.npy");
        write_npy(&p, ">i2", false, "(3,)", &[0, 7, 255, 255, 1, 0]);
        let a = open_npy(&p).unwrap();
        assert_eq!((a.rows(), a.row_len()), (3, 1));
        assert_eq!(a.to_f32_vec().unwrap(), [7.0, -1.0, 256.0]);
        assert!(
            a.to_indices()
                .unwrap_err()
                .message()
                .contains("not a valid item index")
        );
        write_npy(&p, "<f8", false, "()", &2.5f64.to_le_bytes());
        let a = open_npy(&p).unwrap();
        assert_eq!(a.to_f32_vec().unwrap(), [2.5]);
        assert!(
            a.to_indices()
                .unwrap_err()
                .message()
                .contains("must be integers")
        );
    }

    /// A `.npy` file of format `major`.0 with header `text` (as given: no
    /// padding) followed by `data`.
    fn raw_npy(path: &Path, major: u8, text: &[u8], declared: Option<u32>, data: &[u8]) {
        let mut out = MAGIC.to_vec();
        out.extend([major, 0]);
        let len = declared.unwrap_or(text.len() as u32);
        if major == 1 {
            out.extend((len as u16).to_le_bytes());
        } else {
            out.extend(len.to_le_bytes());
        }
        out.extend(text);
        out.extend(data);
        std::fs::write(path, out).unwrap();
    }

    /// `open_npy`'s error, checked to be short and to come quickly (the
    /// real cost is microseconds; the bound only guards against a return
    /// to seconds).
    fn refusal(path: &Path) -> String {
        let start = std::time::Instant::now();
        let e = open_npy(path).unwrap_err().to_string();
        assert!(start.elapsed().as_secs() < 10, "took {:?}", start.elapsed());
        assert!(e.len() < 400, "the message quotes too much: {e}");
        e
    }

    #[test]
    fn oversized_headers_are_refused_before_they_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big.npy");
        // 1 KB of file declaring a 4 GiB header.
        raw_npy(&p, 2, &[b' '; 1000], Some(u32::MAX), &[]);
        let e = refusal(&p);
        assert!(
            e.contains(
                "big.npy: declares a .npy header of 4294967295 bytes, over the 10000 NumPy reads"
            ),
            "{e}"
        );
        // A real header holding a 6-million-digit dimension.
        let mut text = b"{'descr': '<f4', 'fortran_order': False, 'shape': (".to_vec();
        text.extend(b"9".repeat(6_000_000));
        text.extend(b",), }\n");
        raw_npy(&p, 2, &text, None, &[]);
        let e = refusal(&p);
        assert!(e.contains("declares a .npy header of 6000057 bytes"), "{e}");
        // NumPy's bound is inclusive: 10 000 bytes are read, 10 001 are not.
        let head = b"{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }";
        for (len, ok) in [(MAX_HEADER_BYTES, true), (MAX_HEADER_BYTES + 1, false)] {
            let mut text = head.to_vec();
            text.resize(len - 1, b' ');
            text.push(b'\n');
            raw_npy(&p, 2, &text, None, &f32s(&[1.0, 2.0]));
            assert_eq!(open_npy(&p).is_ok(), ok, "{len}");
        }
        // A header cut short by the end of the file.
        raw_npy(&p, 1, b"{'descr'", Some(64), &[]);
        let e = refusal(&p);
        assert!(
            e.contains("truncated: its .npy header promises 64 bytes, the file holds 8"),
            "{e}"
        );
        raw_npy(&p, 4, b"", None, &[]);
        assert!(refusal(&p).contains("has .npy format version 4.0"));
    }

    #[test]
    fn absurd_numbers_and_nesting_in_headers_are_refused_before_parsing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("shape.npy");
        let mut text = b"{'descr': '<f4', 'fortran_order': False, 'shape': (".to_vec();
        text.extend(b"1".repeat(9_000));
        text.extend(b",), }\n");
        raw_npy(&p, 1, &text, None, &[]);
        let e = refusal(&p);
        assert!(
            e.contains("shape.npy: has a .npy header holding a number of 9000 digits; a dimension has at most 20"),
            "{e}"
        );
        let mut text = b"{'descr': '<f4', 'fortran_order': False, 'shape': ".to_vec();
        text.extend(b"(".repeat(4_000));
        text.extend(b")".repeat(4_000));
        text.extend(b", }\n");
        raw_npy(&p, 1, &text, None, &[]);
        let e = refusal(&p);
        assert!(
            e.contains("has a .npy header of 4001 brackets, more than the 64 read"),
            "{e}"
        );
        // Digits inside a quoted string are not numbers.
        let mut text =
            b"{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'note': '".to_vec();
        text.extend(b"1".repeat(100));
        text.extend(b"((', }\n");
        raw_npy(&p, 1, &text, None, &f32s(&[1.0]));
        assert!(open_npy(&p).is_ok());
    }

    #[test]
    fn header_text_in_errors_is_excerpted() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("long.npy");
        let descr = format!("<{}", "f".repeat(9_000));
        write_npy(&p, &descr, false, "(2,)", &[0; 8]);
        let e = refusal(&p);
        assert!(e.contains("long.npy: ") && e.contains(" bytes)"), "{e}");
        let mut text = b"{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'x': ".to_vec();
        text.extend(b"y".repeat(9_000));
        text.extend(b" }\n");
        raw_npy(&p, 1, &text, None, &[]);
        let e = refusal(&p);
        assert!(
            e.contains("has an unreadable .npy header") && e.contains(" bytes)"),
            "{e}"
        );
    }

    #[test]
    fn shapes_whose_size_overflows_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("huge.npy");
        // No item, but items of 2^80 values: the total is 0, the row not.
        for (descr, shape, want) in [
            (
                "<f4",
                "(0, 1099511627776, 1099511627776)",
                "declares shape [0, 1099511627776, 1099511627776], whose size overflows (more than 2^64 values)",
            ),
            (
                "<f4",
                "(4294967296, 4294967296)",
                "declares shape [4294967296, 4294967296], whose size overflows",
            ),
            // 2^62 values fit, their 2^65 bytes do not.
            (
                "<f8",
                "(2147483648, 2147483648)",
                "declares shape [2147483648, 2147483648] of <f8, whose size overflows (more than 2^64 bytes)",
            ),
        ] {
            write_npy(&p, descr, false, shape, &[]);
            let e = refusal(&p);
            assert!(e.contains(&format!("huge.npy: {want}")), "{e}");
        }
        write_npy(&p, "<f4", false, "(0, 3)", &[]);
        let a = open_npy(&p).unwrap();
        assert_eq!((a.rows(), a.row_len()), (0, 3));
        let mut out = [0.0; 3];
        let e = a.read_rows(&[0], None, &mut out).unwrap_err().to_string();
        assert!(e.contains("item 0 is past the end"), "{e}");
    }

    #[test]
    fn bad_files_are_named_with_the_cause() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.npy");
        let err = |p: &Path| open_npy(p).unwrap_err().to_string();
        std::fs::write(&p, b"hello").unwrap();
        assert!(
            err(&p).contains("bad.npy: is not a NumPy .npy file"),
            "{}",
            err(&p)
        );
        write_npy(&p, "<f4", false, "(2, 3)", &f32s(&[1.0; 5]));
        assert!(
            err(&p).contains(
                "truncated: shape [2, 3] of <f4 needs 24 bytes of data, the file holds 20"
            ),
            "{}",
            err(&p)
        );
        write_npy(&p, "<U5", false, "(2,)", &[0; 40]);
        assert!(err(&p).contains("holds strings"), "{}", err(&p));
        write_npy(&p, "<c8", false, "(2,)", &[0; 16]);
        assert!(err(&p).contains("not supported"), "{}", err(&p));
        write_npy(&p, "|O", false, "()", &[0; 16]);
        assert!(err(&p).contains("pickle"), "{}", err(&p));
        write_npy(&p, "<f4", false, "(2, 3)", &f32s(&[1.0; 6]));
        let a = open_npy(&p).unwrap();
        let mut out = [0.0; 3];
        let e = a.read_rows(&[2], None, &mut out).unwrap_err().to_string();
        assert!(
            e.contains("item 2 is past the end: the array has 2 items"),
            "{e}"
        );
        let e = a
            .read_rows(&[0], Some(&[0, 1, 3]), &mut out)
            .unwrap_err()
            .to_string();
        assert!(e.contains("column 3 does not exist"), "{e}");
    }
}
