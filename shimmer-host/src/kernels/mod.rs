//! Fused CPU kernels for the hot spots of a GW training step, as candle
//! custom ops with their own backward passes.
//!
//! candle builds a step from many small tensor ops; on the CPU each one
//! costs an allocation and a pass over memory, and its backward pass
//! several more. Measured on the benchmark workloads, a linear layer's bias
//! gradient (a strided reduction) and the contrastive loss's elementwise
//! work on `B x B` logits dominated. These kernels do the same math in one
//! pass each, with `gemm` (the crate candle's own CPU matmul uses) for the
//! products and SIMD loops for the rest:
//!
//! * [`linear`]: `y = x Wᵀ + b`, optionally followed by ReLU;
//! * [`clip`]: the symmetric cross-entropy of a logits matrix against the
//!   diagonal (CLIP's loss given its logits).
//!
//! They are used for `f32` tensors on the CPU ([`enabled`]); on a GPU and
//! for other dtypes the callers keep candle's composed ops, which compute
//! the same values.

pub mod clip;
pub mod linear;
pub mod simd;

use candle_core::{CpuStorage, DType, Device, Layout, Storage, Tensor};

/// Whether the fused kernels apply to tensors of this device and dtype.
pub fn enabled(device: &Device, dtype: DType) -> bool {
    device.is_cpu() && dtype == DType::F32
}

/// Products smaller than this many multiply-adds run on one thread: below
/// it, handing work to the thread pool costs more than it saves.
const PARALLEL_MACS: usize = 1 << 20;

/// `gemm`'s parallelism for an `m x n x k` product.
fn gemm_parallelism(m: usize, n: usize, k: usize) -> gemm::Parallelism {
    let threads = candle_core::utils::get_num_threads();
    if threads > 1 && m * n * k >= PARALLEL_MACS {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    }
}

/// A strided read-only `f32` matrix view for `gemm`.
#[derive(Clone, Copy)]
struct MatRef<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a> MatRef<'a> {
    /// A contiguous row-major matrix.
    fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// The view of a rank-2 `f32` CPU storage through its layout.
    fn from_storage(storage: &'a CpuStorage, layout: &Layout) -> candle_core::Result<Self> {
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

    /// The transposed view (no copy).
    fn t(self) -> Self {
        Self {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
        }
    }
}

/// `dst (+)= a · b` into a contiguous row-major `dst` of `a.rows x b.cols`;
/// `accumulate` adds to what `dst` holds instead of overwriting it.
fn matmul_into(dst: &mut [f32], a: MatRef<'_>, b: MatRef<'_>, accumulate: bool) {
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
    // SAFETY: every pointer covers its matrix: `MatRef` slices were checked
    // to hold `(rows-1)*row_stride + (cols-1)*col_stride + 1` elements, and
    // `dst` holds `m * n` contiguous ones.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.data.as_ptr(),
            a.col_stride as isize,
            a.row_stride as isize,
            b.data.as_ptr(),
            b.col_stride as isize,
            b.row_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm_parallelism(m, n, k),
        );
    }
}

/// `a · b` into a new contiguous row-major vector, without first zeroing it.
fn matmul_new(a: MatRef<'_>, b: MatRef<'_>) -> Vec<f32> {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert!(b.rows == k, "matmul shapes");
    if m == 0 || n == 0 || k == 0 {
        return vec![0.0; m * n];
    }
    let mut dst = Vec::with_capacity(m * n);
    // SAFETY: as in `matmul_into`; with `read_dst == false` gemm writes every
    // one of the `m * n` destination elements without reading any, so the
    // vector is fully initialised when its length is set.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.data.as_ptr(),
            a.col_stride as isize,
            a.row_stride as isize,
            b.data.as_ptr(),
            b.col_stride as isize,
            b.row_stride as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm_parallelism(m, n, k),
        );
        dst.set_len(m * n);
    }
    dst
}

/// Runs `f` on the `f32` contents of a CPU tensor viewed as a matrix.
fn with_matrix<R>(t: &Tensor, f: impl FnOnce(MatRef<'_>) -> R) -> candle_core::Result<R> {
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        candle_core::bail!("fused CPU kernels run on CPU tensors");
    };
    Ok(f(MatRef::from_storage(cpu, layout)?))
}

/// A CPU tensor owning `data`.
fn cpu_tensor(data: Vec<f32>, shape: &[usize]) -> candle_core::Result<Tensor> {
    Tensor::from_vec(data, shape, &Device::Cpu)
}

/// Splits `0..n` into about one contiguous range per thread, each at least
/// `min_len` long.
fn ranges(n: usize, min_len: usize) -> Vec<std::ops::Range<usize>> {
    let threads = candle_core::utils::get_num_threads().max(1);
    let parts = threads.min(n.div_ceil(min_len.max(1))).max(1);
    let len = n.div_ceil(parts).max(1);
    (0..n).step_by(len).map(|s| s..(s + len).min(n)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_everything_once() {
        for n in [0, 1, 7, 100, 2056] {
            let r = ranges(n, 16);
            assert_eq!(r.iter().map(|r| r.len()).sum::<usize>(), n);
            for w in r.windows(2) {
                assert_eq!(w[0].end, w[1].start);
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
