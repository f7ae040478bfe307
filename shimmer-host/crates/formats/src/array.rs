//! A numeric array read in place from a memory-mapped file: the common form
//! `.npy` files and safetensors tensors take, read row by row (item by
//! item) into `f32`, never copied whole.

use crate::dtype::DType;
use crate::error::{FormatError, Result};
use crate::file::Mapped;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Largest array read whole into memory by [`NumArray::to_f32_vec`] and
/// [`NumArray::to_indices`] (statistics files and item lists): 2^28
/// elements (1 GiB of `f32`).
pub const MAX_WHOLE_ELEMENTS: usize = 1 << 28;

/// The product of `dims`, or `None` when it overflows.
pub(crate) fn product(dims: &[usize]) -> Option<usize> {
    dims.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
}

/// A size for messages: the number, or that it overflows.
pub(crate) fn size_text(size: Option<usize>) -> String {
    size.map_or_else(
        || "more than 2^64 (the size overflows)".to_string(),
        |n| n.to_string(),
    )
}

/// Memory layout of a multi-dimensional array.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Row-major (C order): the last index varies fastest.
    C,
    /// Column-major (Fortran order): the first index varies fastest.
    Fortran,
}

/// An array of `shape` stored at `offset` in a mapped file. Its first axis
/// is the item axis (`rows()`); the other axes, flattened in row-major
/// order, are an item's values (`row_len()`). A 0-d array is one item of
/// one value; a 1-D array is items of one value each.
#[derive(Clone, Debug)]
pub struct NumArray {
    path: PathBuf,
    file: Arc<Mapped>,
    offset: usize,
    dtype: DType,
    shape: Vec<usize>,
    layout: Layout,
}

impl NumArray {
    /// An array over `file`'s bytes from `offset`. Fails (naming `path`)
    /// when the file holds fewer bytes than `shape` and `dtype` need.
    pub(crate) fn new(
        path: &Path,
        file: Arc<Mapped>,
        offset: usize,
        dtype: DType,
        shape: Vec<usize>,
        layout: Layout,
    ) -> Result<Self> {
        // The values of one item and the bytes of all, checked apart: with
        // no item, the product of all axes is 0 even if the others overflow.
        let row_len = product(shape.get(1..).unwrap_or(&[]));
        let needed = row_len
            .and_then(|n| n.checked_mul(shape.first().copied().unwrap_or(1)))
            .and_then(|n| n.checked_mul(dtype.size()));
        let Some(needed) = needed else {
            return Err(FormatError::new(
                path,
                format!(
                    "declares shape {shape:?} of {dtype}, whose size overflows (more than 2^64 bytes)"
                ),
            ));
        };
        let held = file.bytes().len().saturating_sub(offset);
        if held < needed {
            return Err(FormatError::new(
                path,
                format!(
                    "truncated: shape {shape:?} of {dtype} needs {needed} bytes of data, the file holds {held}"
                ),
            ));
        }
        Ok(Self {
            path: path.to_path_buf(),
            file,
            offset,
            dtype,
            shape,
            layout,
        })
    }

    /// The file the array is read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Element type and byte order.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The full shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Memory layout.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// Number of items (the first axis; 1 for a 0-d array).
    pub fn rows(&self) -> usize {
        self.shape.first().copied().unwrap_or(1)
    }

    /// Values per item (the product of the other axes; 1 for 0-d and 1-D).
    pub fn row_len(&self) -> usize {
        // Checked not to overflow when the array was opened.
        product(self.shape.get(1..).unwrap_or(&[])).unwrap_or(usize::MAX)
    }

    /// Every value of the array (checked not to overflow when opened).
    fn len(&self) -> usize {
        self.rows().saturating_mul(self.row_len())
    }

    fn data(&self) -> &[u8] {
        &self.file.bytes()[self.offset..]
    }

    /// Element offsets (in elements, from the data start) of the values
    /// `columns` of item 0, and the element stride between items.
    fn plan(&self, columns: &[usize]) -> (Vec<usize>, usize) {
        match self.layout {
            Layout::C => (columns.to_vec(), self.row_len()),
            Layout::Fortran => {
                // Element (i0, i1, ..., ik) sits at i0 + n0 * (i1 + n1 * (...)):
                // the row-major digits of column `c` over the inner axes,
                // weighted by column-major strides. Columns exist, so no
                // inner axis is empty.
                let inner = self.shape.get(1..).unwrap_or(&[]);
                let offsets = columns
                    .iter()
                    .map(|&c| {
                        let mut rest = c;
                        let mut digits = vec![0; inner.len()];
                        for (digit, &n) in digits.iter_mut().zip(inner).rev() {
                            *digit = rest % n;
                            rest /= n;
                        }
                        let mut weight = self.rows();
                        let mut offset = 0;
                        for (digit, &n) in digits.iter().zip(inner) {
                            offset += digit * weight;
                            weight *= n;
                        }
                        offset
                    })
                    .collect();
                (offsets, 1)
            }
        }
    }

    /// Checks that every column exists and every row is within the array.
    fn check(&self, rows: &[u64], columns: Option<&[usize]>) -> Result<()> {
        if let Some(&bad) = rows.iter().find(|&&r| r >= self.rows() as u64) {
            return Err(FormatError::new(
                &self.path,
                format!(
                    "item {bad} is past the end: the array has {} items",
                    self.rows()
                ),
            ));
        }
        if let Some(&bad) = columns
            .into_iter()
            .flatten()
            .find(|&&c| c >= self.row_len())
        {
            return Err(FormatError::new(
                &self.path,
                format!(
                    "column {bad} does not exist: items have {} values (columns 0..{})",
                    self.row_len(),
                    self.row_len()
                ),
            ));
        }
        Ok(())
    }

    /// Writes items `rows` into `out` as `f32`, item after item: every value
    /// of each item, or only `columns` (in that order) when given.
    /// `out.len()` must be `rows.len()` times the values per item.
    ///
    /// # Errors
    /// An item or column past the array's end, or a wrong output length.
    pub fn read_rows(
        &self,
        rows: &[u64],
        columns: Option<&[usize]>,
        out: &mut [f32],
    ) -> Result<()> {
        self.check(rows, columns)?;
        let width = columns.map_or(self.row_len(), <[usize]>::len);
        let want = rows.len().checked_mul(width);
        if want != Some(out.len()) {
            return Err(FormatError::new(
                &self.path,
                format!(
                    "output holds {} values, {} items of {width} need {}",
                    out.len(),
                    rows.len(),
                    size_text(want)
                ),
            ));
        }
        if width == 0 {
            return Ok(());
        }
        let size = self.dtype.size();
        let data = self.data();
        if self.layout == Layout::C && columns.is_none() {
            let row_bytes = width * size;
            for (o, &r) in out.chunks_exact_mut(width).zip(rows) {
                let start = r as usize * row_bytes;
                self.dtype.to_f32_slice(&data[start..start + row_bytes], o);
            }
            return Ok(());
        }
        let all: Vec<usize>;
        let columns = match columns {
            Some(c) => c,
            None => {
                all = (0..self.row_len()).collect();
                &all
            }
        };
        let (offsets, stride) = self.plan(columns);
        for (o, &r) in out.chunks_exact_mut(width).zip(rows) {
            let base = r as usize * stride;
            for (v, &off) in o.iter_mut().zip(&offsets) {
                let at = (base + off) * size;
                *v = self.dtype.to_f32(&data[at..at + size]);
            }
        }
        Ok(())
    }

    /// Every value, in row-major order, as `f32`: for small arrays
    /// (normalisation statistics).
    ///
    /// # Errors
    /// An array over [`MAX_WHOLE_ELEMENTS`] values.
    pub fn to_f32_vec(&self) -> Result<Vec<f32>> {
        let n = self.len();
        self.check_whole(n)?;
        let rows: Vec<u64> = (0..self.rows() as u64).collect();
        let mut out = vec![0.0; n];
        self.read_rows(&rows, None, &mut out)?;
        Ok(out)
    }

    /// Every value as an item index: for integer arrays listing items.
    ///
    /// # Errors
    /// A floating-point array, a negative value, or an array over
    /// [`MAX_WHOLE_ELEMENTS`] values.
    pub fn to_indices(&self) -> Result<Vec<u64>> {
        if !self.dtype.element.is_integer() {
            return Err(FormatError::new(
                &self.path,
                format!(
                    "holds {} numbers, but item indices must be integers",
                    self.dtype
                ),
            ));
        }
        let n = self.len();
        self.check_whole(n)?;
        let size = self.dtype.size();
        let data = self.data();
        let mut out = Vec::with_capacity(n);
        let (offsets, stride) = self.plan(&(0..self.row_len()).collect::<Vec<_>>());
        for r in 0..self.rows() {
            for &off in &offsets {
                let at = (r * stride + off) * size;
                match self.dtype.to_i64(&data[at..at + size]) {
                    Some(v) if v >= 0 => out.push(v as u64),
                    _ => {
                        return Err(FormatError::new(
                            &self.path,
                            format!(
                                "value number {} is not a valid item index (negative or too large)",
                                out.len()
                            ),
                        ));
                    }
                }
            }
        }
        Ok(out)
    }

    fn check_whole(&self, n: usize) -> Result<()> {
        if n > MAX_WHOLE_ELEMENTS {
            return Err(FormatError::new(
                &self.path,
                format!("holds {n} values, over the {MAX_WHOLE_ELEMENTS} read whole into memory"),
            ));
        }
        Ok(())
    }
}
