//! Matrix products for the fused kernels: strided views over CPU storage
//! and `gemm` calls, split by output rows over candle's CPU thread pool
//! when they are big enough.

use super::pool;
use candle_core::{CpuStorage, Layout};

/// Products smaller than this many multiply-adds run on one thread: below
/// it, handing work to other threads costs more than it saves.
const PARALLEL_MACS: usize = 1 << 19;

/// Fewest output rows per thread of a split product.
const MIN_ROWS_PER_PART: usize = 8;

/// A strided read-only `f32` matrix view for `gemm`.
#[derive(Clone, Copy)]
pub struct MatRef<'a> {
    /// Elements from the first one on.
    pub data: &'a [f32],
    /// Number of rows.
    pub rows: usize,
    /// Number of columns.
    pub cols: usize,
    /// Distance between rows.
    pub row_stride: usize,
    /// Distance between columns.
    pub col_stride: usize,
}

impl<'a> MatRef<'a> {
    /// A contiguous row-major matrix.
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// The view of a rank-2 `f32` CPU storage through its layout.
    pub fn from_storage(storage: &'a CpuStorage, layout: &Layout) -> candle_core::Result<Self> {
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("fused CPU kernels take f32 tensors");
        };
        let (rows, cols) = layout.shape().dims2()?;
        let stride = layout.stride();
        let start = layout.start_offset();
        let extent = if rows == 0 || cols == 0 {
            0
        } else {
            (rows - 1) * stride[0] + (cols - 1) * stride[1] + 1
        };
        let data = data
            .get(start..start + extent)
            .ok_or_else(|| candle_core::Error::Msg("tensor layout outside its storage".into()))?;
        Ok(Self {
            data,
            rows,
            cols,
            row_stride: stride[0],
            col_stride: stride[1],
        })
    }

    /// Rows `range` of the view.
    fn rows(self, range: std::ops::Range<usize>) -> Self {
        let data = if range.is_empty() {
            &self.data[..0]
        } else {
            &self.data[range.start * self.row_stride..]
        };
        Self {
            data,
            rows: range.len(),
            ..self
        }
    }

    /// The transposed view (no copy).
    pub fn t(self) -> Self {
        Self {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
        }
    }
}

/// A `Send` handle on the destination of a product split between threads.
#[derive(Clone, Copy)]
struct Dst(*mut f32);
// SAFETY: each thread writes a disjoint block of rows through it, and the
// caller outlives the threads (`pool::parallel_parts` joins them).
unsafe impl Send for Dst {}
// SAFETY: as for `Send`: shared only to hand each thread its own rows.
unsafe impl Sync for Dst {}

impl Dst {
    /// The pointer (a method, so that closures capture the whole `Dst`).
    fn ptr(self) -> *mut f32 {
        self.0
    }
}

/// `dst (+)= a · b` on one thread. `dst` points to `a.rows * b.cols`
/// row-major elements; without `accumulate` they need not be initialised.
///
/// # Safety
/// `dst` must be valid for writes (and reads, with `accumulate`) of
/// `a.rows * b.cols` elements that nothing else accesses meanwhile.
unsafe fn gemm_serial(dst: *mut f32, a: MatRef<'_>, b: MatRef<'_>, accumulate: bool) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    // gemm's micro-kernels compute blocks of 16 rows: with few rows and
    // many columns, computing the transposed product `bᵀ aᵀ` into the
    // transposed destination wastes fewer lanes (a convolution with 3
    // output channels: 3 x 65536).
    let transposed = m < 16 && n > m;
    let (rows, cols, dst_cs, dst_rs, lhs, rhs) = if transposed {
        (n, m, n as isize, 1isize, b.t(), a.t())
    } else {
        (m, n, 1isize, n as isize, a, b)
    };
    // SAFETY: the `MatRef` slices hold `(rows-1)*row_stride +
    // (cols-1)*col_stride + 1` elements; `dst` is the caller's promise
    // (every `(i, j)` of the `m x n` row-major destination is reached once,
    // through either orientation's strides).
    // With `read_dst == false` gemm writes every destination element
    // without reading it.
    unsafe {
        gemm::gemm(
            rows,
            cols,
            k,
            dst,
            dst_cs,
            dst_rs,
            accumulate,
            lhs.data.as_ptr(),
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.data.as_ptr(),
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            if accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// `dst (+)= a · b`, split by rows of `a` between threads when big enough.
///
/// # Safety
/// As [`gemm_serial`].
unsafe fn gemm_rows(dst: *mut f32, a: MatRef<'_>, b: MatRef<'_>, accumulate: bool) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    let parts = pool::ranges(m, MIN_ROWS_PER_PART);
    if parts.len() <= 1 || m * n * k < PARALLEL_MACS {
        // SAFETY: the caller's promise.
        unsafe { gemm_serial(dst, a, b, accumulate) };
        return;
    }
    let dst = Dst(dst);
    pool::parallel_parts(parts, |range| {
        // SAFETY: rows `range` of `dst` belong to this part alone.
        unsafe { gemm_serial(dst.ptr().add(range.start * n), a.rows(range), b, accumulate) };
    });
}

/// `dst (+)= a · b` into a contiguous row-major `dst` of `a.rows x b.cols`;
/// `accumulate` adds to what `dst` holds instead of overwriting it.
pub fn matmul_into(dst: &mut [f32], a: MatRef<'_>, b: MatRef<'_>, accumulate: bool) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert!(b.rows == k && dst.len() == m * n, "matmul shapes");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst.fill(0.0);
        }
        return;
    }
    // SAFETY: `dst` is an exclusively borrowed, initialised `m * n` slice.
    unsafe { gemm_rows(dst.as_mut_ptr(), a, b, accumulate) };
}

/// `a · b` into a new contiguous row-major vector, without first zeroing it.
pub fn matmul_new(a: MatRef<'_>, b: MatRef<'_>) -> Vec<f32> {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert!(b.rows == k, "matmul shapes");
    if m == 0 || n == 0 || k == 0 {
        return vec![0.0; m * n];
    }
    let mut dst = Vec::with_capacity(m * n);
    // SAFETY: the vector owns `m * n` elements of capacity; gemm writes all
    // of them (no accumulation), so they are initialised when the length is set.
    unsafe {
        gemm_rows(dst.as_mut_ptr(), a, b, false);
        dst.set_len(m * n);
    }
    dst
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_products_equal_one_product() {
        let (m, k, n) = (300, 70, 50); // above PARALLEL_MACS
        assert!(m * n * k >= PARALLEL_MACS);
        let a: Vec<f32> = (0..m * k).map(|i| (i % 13) as f32 - 6.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 7) as f32 - 3.0).collect();
        let (am, bm) = (MatRef::row_major(&a, m, k), MatRef::row_major(&b, k, n));
        let got = matmul_new(am, bm);
        for (i, j) in [(0, 0), (151, 17), (299, 49)] {
            let want: f32 = (0..k).map(|t| a[i * k + t] * b[t * n + j]).sum();
            assert_eq!(got[i * n + j], want, "({i}, {j})");
        }
        let mut acc = got.clone();
        matmul_into(&mut acc, am, bm, true);
        assert!(acc.iter().zip(&got).all(|(x, y)| *x == 2.0 * y));
    }

    #[test]
    fn few_rows_and_many_columns_give_the_same_product() {
        let (m, k, n) = (3, 40, 200);
        let a: Vec<f32> = (0..m * k).map(|i| (i % 11) as f32 - 5.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 - 2.0).collect();
        let mut got = vec![1f32; m * n];
        matmul_into(
            &mut got,
            MatRef::row_major(&a, m, k),
            MatRef::row_major(&b, k, n),
            true,
        );
        for i in 0..m {
            for j in 0..n {
                let want: f32 = 1.0 + (0..k).map(|t| a[i * k + t] * b[t * n + j]).sum::<f32>();
                assert_eq!(got[i * n + j], want, "({i}, {j})");
            }
        }
    }

    #[test]
    fn matmul_into_handles_transposed_views() {
        // a = [[1,2],[3,4]], b = [[5,6],[7,8]]
        let a = [1f32, 2.0, 3.0, 4.0];
        let b = [5f32, 6.0, 7.0, 8.0];
        let mut d = vec![0f32; 4];
        matmul_into(
            &mut d,
            MatRef::row_major(&a, 2, 2),
            MatRef::row_major(&b, 2, 2),
            false,
        );
        assert_eq!(d, [19.0, 22.0, 43.0, 50.0]);
        // aᵀ b = [[1,3],[2,4]] b, accumulated onto the previous result
        matmul_into(
            &mut d,
            MatRef::row_major(&a, 2, 2).t(),
            MatRef::row_major(&b, 2, 2),
            true,
        );
        assert_eq!(d, [19.0 + 26.0, 22.0 + 30.0, 43.0 + 38.0, 50.0 + 44.0]);
    }
}
