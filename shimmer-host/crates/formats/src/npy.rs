//! NumPy `.npy` files (format versions 1 to 3): the header is parsed by the
//! `npyz` crate, the data read in place from a memory map.
//!
//! Supported element types: `bool`, signed and unsigned integers of 1 to 8
//! bytes, `float16/32/64`, in either byte order; C or Fortran order.
//! Structured, string, complex, date and object arrays are refused with the
//! type named (object arrays hold pickles: see [`crate::domain_split`]).

use crate::array::{Layout, NumArray};
use crate::dtype::{ByteOrder, DType, Element};
use crate::error::{FormatError, Result, io_text};
use crate::file::{Mapped, map_regular};
use npyz::{Endianness, TypeChar};
use std::path::Path;
use std::sync::Arc;

/// The first bytes of every `.npy` file.
const MAGIC: &[u8] = b"\x93NUMPY";

/// A parsed `.npy` header: where the data starts and what it holds.
pub(crate) struct Header {
    /// Byte offset of the data.
    pub(crate) offset: usize,
    /// npyz's reading of the header.
    pub(crate) header: npyz::NpyHeader,
}

/// Parses the header of the `.npy` file whose bytes are `bytes`.
pub(crate) fn header(path: &Path, bytes: &[u8]) -> Result<Header> {
    if !bytes.starts_with(MAGIC) {
        return Err(FormatError::new(
            path,
            "is not a NumPy .npy file (it does not start with \\x93NUMPY)",
        ));
    }
    let mut rest = bytes;
    let header = npyz::NpyHeader::from_reader(&mut rest).map_err(|e| {
        FormatError::new(
            path,
            format!("has an unreadable .npy header: {}", io_text(&e)),
        )
    })?;
    Ok(Header {
        offset: bytes.len() - rest.len(),
        header,
    })
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
            return Err(format!("holds strings (dtype {ty}), not numbers"));
        }
        _ => {
            return Err(format!(
                "has dtype {ty}, which is not supported: use bool, (u)int8..64 or float16/32/64"
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
                    other.descr()
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
            npyz::DType::Plain(ty) => ty.to_string(),
            other => other.descr(),
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
