//! A checksum of a set of named tensors, stored in a `.safetensors` file's
//! metadata when shimmer writes it and checked when it reads it back, so a
//! checkpoint whose bytes changed on disk (a bad sector, a partial copy, a
//! stray write) is refused instead of silently training on garbage.
//!
//! CRC-32C over each tensor's name, dtype, shape and bytes, in name order:
//! independent of where the file puts each tensor, fast (hardware CRC) on
//! the large files checkpoints are.

use crate::error::{FormatError, Result, excerpt};
use safetensors::SafeTensors;
use std::path::Path;

/// Metadata key of the checksum in `.safetensors` files shimmer writes.
pub const CHECKSUM_KEY: &str = "shimmer.crc32c";

/// Accumulates the checksum of tensors given in name order.
#[derive(Debug, Default)]
pub struct TensorChecksum {
    crc: u32,
}

impl TensorChecksum {
    /// Adds one tensor (`dtype` as the safetensors header names it).
    pub fn add(&mut self, name: &str, dtype: &str, shape: &[usize], bytes: &[u8]) {
        let mut head = format!("{name}\0{dtype}\0");
        for d in shape {
            head.push_str(&format!("{d},"));
        }
        head.push('\0');
        self.crc = crc32c::crc32c_append(self.crc, head.as_bytes());
        self.crc = crc32c::crc32c_append(self.crc, bytes);
    }

    /// The checksum, as stored in the metadata (8 hex digits).
    pub fn finish(&self) -> String {
        format!("{:08x}", self.crc)
    }
}

/// The checksum of every tensor of a parsed file.
pub fn checksum_of(file: &SafeTensors<'_>) -> String {
    let mut names: Vec<&str> = file.names();
    names.sort();
    let mut sum = TensorChecksum::default();
    for name in &names {
        if let Ok(view) = file.tensor(name) {
            sum.add(
                name,
                &format!("{:?}", view.dtype()),
                view.shape(),
                view.data(),
            );
        }
    }
    sum.finish()
}

/// Checks the checksum `bytes` (a whole `.safetensors` file read from
/// `path`) carries, if it carries one (files written by other tools do
/// not, and are accepted as they are).
///
/// # Errors
/// A malformed file, or one whose tensors do not match its checksum.
pub fn verify(path: &Path, bytes: &[u8]) -> Result<()> {
    let (_, metadata) = SafeTensors::read_metadata(bytes).map_err(|e| invalid(path, &e))?;
    let Some(expected) = metadata
        .metadata()
        .as_ref()
        .and_then(|m| m.get(CHECKSUM_KEY))
    else {
        return Ok(());
    };
    let file = SafeTensors::deserialize(bytes).map_err(|e| invalid(path, &e))?;
    let found = checksum_of(&file);
    if &found != expected {
        return Err(FormatError::new(
            path,
            format!(
                "is corrupt: its tensors do not match the checksum written with them \
                 ({CHECKSUM_KEY} {}, now {found}); its bytes changed on disk",
                excerpt(expected)
            ),
        ));
    }
    Ok(())
}

/// The error of a file the `safetensors` crate cannot read.
fn invalid(path: &Path, e: &safetensors::SafeTensorError) -> FormatError {
    FormatError::new(
        path,
        format!(
            "is not a valid .safetensors file: {}",
            excerpt(&e.to_string())
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use safetensors::Dtype;
    use safetensors::tensor::TensorView;
    use std::collections::HashMap;

    fn file(values: &[f32], with_sum: bool) -> Vec<u8> {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let view = TensorView::new(Dtype::F32, vec![values.len()], &bytes).unwrap();
        let mut sum = TensorChecksum::default();
        sum.add("w", "F32", &[values.len()], &bytes);
        let meta = with_sum.then(|| HashMap::from([(CHECKSUM_KEY.to_string(), sum.finish())]));
        safetensors::serialize([("w", view)], meta).unwrap()
    }

    #[test]
    fn a_changed_byte_is_caught_and_files_without_a_sum_pass() {
        let path = Path::new("w.safetensors");
        let good = file(&[1.0, 2.0, 3.0], true);
        verify(path, &good).unwrap();
        let mut bad = good.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0x10;
        let err = verify(path, &bad).unwrap_err().to_string();
        assert!(
            err.contains("w.safetensors") && err.contains("is corrupt"),
            "{err}"
        );
        verify(path, &file(&[1.0], false)).unwrap();
    }
}
