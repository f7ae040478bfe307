//! A checksum of a set of named tensors, stored in a `.safetensors` file's
//! metadata when shimmer writes it and checked when it reads it back, so a
//! checkpoint whose bytes changed on disk (a bad sector, a partial copy, a
//! stray write) is refused instead of silently training on garbage.
//!
//! CRC-32C over each tensor's name, dtype, shape and bytes, in name order:
//! independent of where the file puts each tensor, fast (hardware CRC) on
//! the large files checkpoints are.
//!
//! A file shimmer wrote must carry its checksum: one without (its key
//! renamed or dropped) was altered, and is refused like a corrupt one. A
//! file is shimmer's when its metadata has any `shimmer.` key (the
//! [`WRITER_KEY`] every checkpoint carries) or it holds the optimiser or
//! trainer entries only shimmer's training checkpoints have. Files from
//! other tools (a state dict saved from Python) carry none of these and
//! load as they are.

use crate::error::{FormatError, Result, excerpt};
use safetensors::SafeTensors;
use std::path::Path;

/// Metadata key of the checksum in `.safetensors` files shimmer writes.
pub const CHECKSUM_KEY: &str = "shimmer.crc32c";

/// Metadata key naming the program that wrote a `.safetensors` file; shimmer
/// writes [`WRITER`] under it in every checkpoint, so a checkpoint stripped of
/// its checksum is still known as one of shimmer's.
pub const WRITER_KEY: &str = "shimmer.writer";

/// The value of [`WRITER_KEY`] in files shimmer writes.
pub const WRITER: &str = "shimmer-rs";

/// Prefixes of tensor names only shimmer's training checkpoints hold (the
/// optimiser state and the trainer's bookkeeping).
const OWN_TENSOR_PREFIXES: [&str; 2] = ["optimizer.", "trainer."];

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

/// The CRC-32C of `bytes` continuing `crc` (0 to start), for the other files
/// shimmer writes and checks on reading (the latent cache), so every
/// checksum of the project is computed one way.
pub fn crc32c_append(crc: u32, bytes: &[u8]) -> u32 {
    crc32c::crc32c_append(crc, bytes)
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

/// The metadata shimmer writes with tensors whose checksum is `sum`: the
/// checksum and the writer.
pub fn metadata(sum: &TensorChecksum) -> std::collections::HashMap<String, String> {
    std::collections::HashMap::from([
        (CHECKSUM_KEY.to_string(), sum.finish()),
        (WRITER_KEY.to_string(), WRITER.to_string()),
    ])
}

/// Checks the checksum `bytes` (a whole `.safetensors` file read from
/// `path`) carries. A file without one is accepted only when nothing in it
/// says shimmer wrote it (files written by other tools carry no checksum).
///
/// # Errors
/// A malformed file, one whose tensors do not match its checksum, or one
/// of shimmer's without its checksum.
pub fn verify(path: &Path, bytes: &[u8]) -> Result<()> {
    let (_, metadata) = SafeTensors::read_metadata(bytes).map_err(|e| invalid(path, &e))?;
    let Some(expected) = metadata
        .metadata()
        .as_ref()
        .and_then(|m| m.get(CHECKSUM_KEY))
    else {
        if let Some(why) = written_by_shimmer(&metadata) {
            return Err(FormatError::new(
                path,
                format!(
                    "has no checksum: it was altered or truncated ({CHECKSUM_KEY} is \
                     missing from its metadata, although {why})"
                ),
            ));
        }
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

/// Why the file whose header is `metadata` is one shimmer wrote (a
/// `shimmer.` metadata key, or an optimiser or trainer tensor), or `None`
/// for a file of another tool.
fn written_by_shimmer(metadata: &safetensors::tensor::Metadata) -> Option<String> {
    if let Some(key) = metadata
        .metadata()
        .as_ref()
        .and_then(|m| m.keys().filter(|k| k.starts_with("shimmer.")).min())
    {
        return Some(format!(
            "its metadata key `{}` says shimmer wrote it",
            excerpt(key)
        ));
    }
    metadata
        .offset_keys()
        .into_iter()
        .filter(|name| OWN_TENSOR_PREFIXES.iter().any(|p| name.starts_with(p)))
        .min()
        .map(|name| {
            format!(
                "its tensor `{}` is one only shimmer's training checkpoints hold",
                excerpt(&name)
            )
        })
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
        let meta = with_sum.then(|| {
            let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            let mut sum = TensorChecksum::default();
            sum.add("w", "F32", &[values.len()], &bytes);
            metadata(&sum)
        });
        named("w", values, meta)
    }

    /// One F32 tensor `name` with `meta` as the file's metadata.
    fn named(name: &str, values: &[f32], meta: Option<HashMap<String, String>>) -> Vec<u8> {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let view = TensorView::new(Dtype::F32, vec![values.len()], &bytes).unwrap();
        safetensors::serialize([(name, view)], meta).unwrap()
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

    /// Replaces the first `from` of the header (before the tensors' bytes)
    /// with `to`, of the same length, so the header length stays valid.
    fn rename_in_header(bytes: &mut [u8], from: &str, to: &str) {
        assert_eq!(from.len(), to.len());
        let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let header = &mut bytes[8..8 + header_len];
        let at = header
            .windows(from.len())
            .position(|w| w == from.as_bytes())
            .unwrap();
        header[at..at + to.len()].copy_from_slice(to.as_bytes());
    }

    #[test]
    fn a_file_of_shimmer_stripped_of_its_checksum_is_refused() {
        let path = Path::new("last.safetensors");
        let good = file(&[1.0, 2.0, 3.0], true);
        // The checksum key renamed (still a `shimmer.` key), a weight flipped.
        let mut stripped = good.clone();
        rename_in_header(&mut stripped, CHECKSUM_KEY, "shimmer.crc32_");
        let last = stripped.len() - 1;
        stripped[last] ^= 0x10;
        let err = verify(path, &stripped).unwrap_err().to_string();
        assert!(
            err.starts_with("last.safetensors: has no checksum")
                && err.contains("it was altered or truncated"),
            "{err}"
        );
        // Both keys renamed out of the `shimmer.` namespace: the writer key
        // was the last sign; the file is then another tool's.
        let mut both = good.clone();
        rename_in_header(&mut both, CHECKSUM_KEY, "xhimmer.crc32c");
        rename_in_header(&mut both, WRITER_KEY, "xhimmer.writer");
        verify(path, &both).unwrap();
        // ...unless it holds a training checkpoint's entries.
        let step = named("trainer.step", &[3.0], None);
        let err = verify(path, &step).unwrap_err().to_string();
        assert!(
            err.contains("has no checksum") && err.contains("`trainer.step`"),
            "{err}"
        );
        let opt = named("optimizer.scheduler.step", &[3.0], None);
        assert!(verify(path, &opt).is_err());
        // The writer key alone (an older file or a foreign one) is enough.
        let writer = HashMap::from([(WRITER_KEY.to_string(), WRITER.to_string())]);
        let err = verify(path, &named("w", &[1.0], Some(writer)))
            .unwrap_err()
            .to_string();
        assert!(err.contains("`shimmer.writer`"), "{err}");
    }

    #[test]
    fn crc32c_appends_and_matches_the_reference_value() {
        // RFC 3720's check value of CRC-32C.
        assert_eq!(crc32c_append(0, b"123456789"), 0xe306_9283);
        assert_eq!(
            crc32c_append(crc32c_append(0, b"1234"), b"56789"),
            0xe306_9283
        );
    }

    #[test]
    fn files_of_other_tools_load_as_they_are() {
        let path = Path::new("export.safetensors");
        // What `safetensors.torch.save_file` writes: `format: pt`, no sum.
        let pt = HashMap::from([("format".to_string(), "pt".to_string())]);
        verify(path, &named("gw_mod.w", &[1.0, 2.0], Some(pt))).unwrap();
        verify(path, &named("encoder.0.weight", &[1.0], None)).unwrap();
    }
}
