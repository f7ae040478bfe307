//! One named tensor of a `.safetensors` file, read in place (the header is
//! parsed and validated by the `safetensors` crate).

use crate::array::{Layout, NumArray};
use crate::dtype::{DType, Element};
use crate::error::{FormatError, Result, excerpt};
use crate::file::map_regular;
use safetensors::{Dtype, SafeTensors};
use std::path::Path;
use std::sync::Arc;

/// Tensor names listed in an error before "...".
const NAMES_SHOWN: usize = 20;

/// Opens tensor `name` of the `.safetensors` file at `path`. Its first axis
/// is the item axis.
///
/// # Errors
/// A missing or malformed file, a tensor not in it (the message lists the
/// ones that are), or an unsupported element type.
pub fn open_safetensors(path: &Path, name: &str) -> Result<NumArray> {
    let file = Arc::new(map_regular(path)?);
    let (header_len, metadata) = SafeTensors::read_metadata(file.bytes()).map_err(|e| {
        FormatError::new(
            path,
            format!(
                "is not a valid .safetensors file: {}",
                excerpt(&e.to_string())
            ),
        )
    })?;
    let Some(info) = metadata.info(name) else {
        let mut names: Vec<String> = metadata.tensors().into_keys().collect();
        names.sort();
        let more = names.len().saturating_sub(NAMES_SHOWN);
        names.truncate(NAMES_SHOWN);
        let names: Vec<String> = names.iter().map(|n| excerpt(n)).collect();
        let mut list = names.join(", ");
        if more > 0 {
            list.push_str(&format!(", ... ({more} more)"));
        }
        return Err(FormatError::new(
            path,
            format!("has no tensor `{}`; it holds: {list}", excerpt(name)),
        ));
    };
    let element = match info.dtype {
        Dtype::BOOL => Element::Bool,
        Dtype::U8 => Element::U8,
        Dtype::I8 => Element::I8,
        Dtype::I16 => Element::I16,
        Dtype::U16 => Element::U16,
        Dtype::I32 => Element::I32,
        Dtype::U32 => Element::U32,
        Dtype::I64 => Element::I64,
        Dtype::U64 => Element::U64,
        Dtype::F16 => Element::F16,
        Dtype::BF16 => Element::BF16,
        Dtype::F32 => Element::F32,
        Dtype::F64 => Element::F64,
        other => {
            return Err(FormatError::new(
                path,
                format!(
                    "tensor `{}` has dtype {other:?}, which is not supported",
                    excerpt(name)
                ),
            ));
        }
    };
    let Some(offset) = header_len
        .checked_add(8)
        .and_then(|n| n.checked_add(info.data_offsets.0))
    else {
        return Err(FormatError::new(
            path,
            format!(
                "tensor `{}` declares a data offset that overflows",
                excerpt(name)
            ),
        ));
    };
    NumArray::new(
        path,
        file,
        offset,
        DType::little(element),
        info.shape.clone(),
        Layout::C,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use safetensors::tensor::TensorView;

    #[test]
    fn reads_a_named_tensor_and_lists_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.safetensors");
        let a: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let b: Vec<u8> = [7i64, 8].iter().flat_map(|v| v.to_le_bytes()).collect();
        let tensors = [
            ("a", TensorView::new(Dtype::F32, vec![3, 2], &a).unwrap()),
            ("b", TensorView::new(Dtype::I64, vec![2], &b).unwrap()),
        ];
        safetensors::serialize_to_file(tensors, None, &path).unwrap();
        let t = open_safetensors(&path, "a").unwrap();
        assert_eq!((t.rows(), t.row_len()), (3, 2));
        let mut out = [0.0; 2];
        t.read_rows(&[2], None, &mut out).unwrap();
        assert_eq!(out, [5.0, 6.0]);
        assert_eq!(
            open_safetensors(&path, "b").unwrap().to_indices().unwrap(),
            [7, 8]
        );
        let err = open_safetensors(&path, "c").unwrap_err().to_string();
        assert!(err.ends_with("has no tensor `c`; it holds: a, b"), "{err}");
        std::fs::write(&path, b"garbage!garbage").unwrap();
        let err = open_safetensors(&path, "a").unwrap_err().to_string();
        assert!(err.contains("is not a valid .safetensors file"), "{err}");
    }
}
