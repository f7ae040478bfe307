//! One reader per data file format, shared by every part of shimmer-rs
//! that reads researchers' files (the `arrays` and `simple-shapes` plugins,
//! item lists of the data pipeline, the configuration loader):
//!
//! * [`npy`]: NumPy `.npy` arrays, memory-mapped, every numeric dtype in
//!   both byte orders, C or Fortran order;
//! * [`safetensors_file`]: one named tensor of a `.safetensors` file;
//! * [`image`]: PNG images and folders of `{index}.png`, to `f32` in
//!   [0, 1] channels first; RGB images to PNG bytes;
//! * [`domain_split`]: shimmer-ssd's pickled domain-split files;
//! * [`torch_zip`]: PyTorch zip checkpoints (`torch.save`, Lightning's
//!   `.ckpt`) read without running their pickle, as plain data;
//! * [`file`]: only regular files, under size caps.
//!
//! Every error names the file and the problem ([`FormatError`]).
//!
//! ```no_run
//! use shimmer_formats::npy::open_npy;
//! use std::path::Path;
//!
//! let labels = open_npy(Path::new("train_labels.npy"))?;
//! let mut rows = vec![0.0f32; 2 * labels.row_len()];
//! labels.read_rows(&[0, 3], None, &mut rows)?;
//! # Ok::<(), shimmer_formats::FormatError>(())
//! ```

pub mod array;
pub mod checksum;
pub mod domain_split;
pub mod dtype;
pub mod error;
pub mod file;
pub mod image;
pub mod npy;
mod pickle_scan;
pub mod safetensors_file;
#[cfg(test)]
mod test_util;
pub mod torch_zip;

pub use array::{Layout, NumArray};
pub use domain_split::{DomainSplit, SplitEntry};
pub use dtype::{ByteOrder, DType, Element};
pub use error::{FormatError, excerpt};
pub use image::{ImageFolder, ImageShape};
