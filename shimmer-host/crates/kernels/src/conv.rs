//! 2-D convolutions and transposed convolutions (square kernels, NCHW,
//! no dilation or groups) as `im2col` / `col2im` plus one `gemm` product
//! over the whole batch, with their backward passes: the same lowering
//! PyTorch's CPU convolution uses without oneDNN, on candle's thread pool.
//!
//! A convolution of `x [B, C, H, W]` with `w [O, C, k, k]` is the product
//! `W [O, C·k·k] · cols [C·k·k, B·OH·OW]`, where `cols` holds every input
//! patch (`im2col`); its input gradient is `col2im(Wᵀ · dY)`, its weight
//! gradient `dY · colsᵀ`. A transposed convolution is that convolution's
//! adjoint: `y = col2im(Wᵀ · x)`, `dx = W · im2col(dy)`, `dW = x ·
//! im2col(dy)ᵀ` — the same three pieces in the other order.

use super::matmul::{MatRef, matmul_into, matmul_new};
use super::pool;
use super::simd::simd_fn;
use super::{cpu_tensor, with_contiguous};
use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};

/// The sizes of one convolution: an "image" side `[batch, c, h, w]` read
/// in patches of `k x k` every `stride` pixels after `pad` pixels of zero
/// padding, giving `oh x ow` positions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Geometry {
    batch: usize,
    c: usize,
    h: usize,
    w: usize,
    k: usize,
    stride: usize,
    pad: usize,
    oh: usize,
    ow: usize,
}

impl Geometry {
    /// The geometry of convolving `[batch, c, h, w]`, or an error when the
    /// kernel does not fit.
    fn of_conv(
        batch: usize,
        c: usize,
        h: usize,
        w: usize,
        k: usize,
        stride: usize,
        pad: usize,
    ) -> candle_core::Result<Self> {
        if stride == 0 || k == 0 || h + 2 * pad < k || w + 2 * pad < k {
            candle_core::bail!(
                "convolution: a {k}x{k} kernel (stride {stride}, padding {pad}) does not fit a {h}x{w} input"
            );
        }
        Ok(Self {
            batch,
            c,
            h,
            w,
            k,
            stride,
            pad,
            oh: (h + 2 * pad - k) / stride + 1,
            ow: (w + 2 * pad - k) / stride + 1,
        })
    }

    /// Rows of `cols`: `c * k * k`.
    fn rows(&self) -> usize {
        self.c * self.k * self.k
    }

    /// The input column of output position `o` for kernel offset `kk`,
    /// when inside the image.
    #[inline]
    fn source(&self, o: usize, kk: usize, size: usize) -> Option<usize> {
        (o * self.stride + kk)
            .checked_sub(self.pad)
            .filter(|&i| i < size)
    }

    /// The output positions `o` whose input `o * stride + kk - pad` lies
    /// in `0..size`, and the input of the first one.
    #[inline]
    fn valid(&self, kk: usize, size: usize, positions: usize) -> (std::ops::Range<usize>, usize) {
        let first = self.pad.saturating_sub(kk).div_ceil(self.stride);
        // Last o with o * stride + kk - pad <= size - 1.
        let end = match (size + self.pad).checked_sub(kk + 1) {
            Some(top) => (top / self.stride + 1).min(positions),
            None => 0,
        };
        let first = first.min(end);
        (
            first..end,
            (first * self.stride + kk).saturating_sub(self.pad),
        )
    }
}

/// Most elements of one tile's patch matrix: about 1 MiB, so a tile's
/// `im2col`, product and `col2im` stay in cache.
const TILE_ELEMENTS: usize = 1 << 18;

/// The batch in tiles of whole images, each tile's patch matrix near
/// [`TILE_ELEMENTS`], then the tiles in one contiguous run per thread.
fn tile_runs(g: Geometry) -> Vec<Vec<std::ops::Range<usize>>> {
    let per_image = (g.rows() * g.oh * g.ow).max(1);
    let images = (TILE_ELEMENTS / per_image).clamp(1, g.batch.max(1));
    let tiles: Vec<std::ops::Range<usize>> = (0..g.batch)
        .step_by(images)
        .map(|s| s..(s + images).min(g.batch))
        .collect();
    pool::ranges(tiles.len(), 1)
        .into_iter()
        .map(|r| tiles[r].to_vec())
        .collect()
}

/// Every patch of images `imgs` of `x` (contiguous `[batch, c, h, w]`) as
/// the columns of a `[c·k·k, imgs·oh·ow]` row-major matrix (zeros where a
/// patch covers padding).
fn im2col(x: &[f32], g: Geometry, imgs: std::ops::Range<usize>) -> Vec<f32> {
    let (rows, n) = (g.rows(), g.oh * g.ow);
    let cols = imgs.len() * n;
    let mut out = vec![0f32; rows * cols];
    for (row, out_row) in out.chunks_exact_mut(cols).enumerate() {
        let (c, ki, kj) = (row / (g.k * g.k), row / g.k % g.k, row % g.k);
        let (xs, x0) = g.valid(kj, g.w, g.ow);
        for (t, b) in imgs.clone().enumerate() {
            let plane = &x[(b * g.c + c) * g.h * g.w..][..g.h * g.w];
            let out_b = &mut out_row[t * n..][..n];
            for oy in 0..g.oh {
                let Some(iy) = g.source(oy, ki, g.h) else {
                    continue;
                };
                let src = &plane[iy * g.w..][..g.w];
                let dst = &mut out_b[oy * g.ow..][..g.ow][xs.clone()];
                if g.stride == 1 {
                    dst.copy_from_slice(&src[x0..x0 + dst.len()]);
                } else {
                    for (d, v) in dst.iter_mut().zip(src[x0..].iter().step_by(g.stride)) {
                        *d = *v;
                    }
                }
            }
        }
    }
    out
}

/// The adjoint of [`im2col`]: adds every column of `cols` (`[c·k·k,
/// imgs·oh·ow]`) onto the pixels its patch read, in `out` (the images
/// `imgs`, contiguous `[imgs, c, h, w]`, zeroed by the caller).
fn col2im(cols: &[f32], g: Geometry, images: usize, out: &mut [f32]) {
    let plane_len = g.h * g.w;
    let n = g.oh * g.ow;
    let n_cols = images * n;
    for (i, plane) in out.chunks_exact_mut(plane_len).enumerate() {
        let (t, c) = (i / g.c, i % g.c);
        for ki in 0..g.k {
            for kj in 0..g.k {
                let row = (c * g.k + ki) * g.k + kj;
                let src = &cols[row * n_cols + t * n..][..n];
                let (xs, x0) = g.valid(kj, g.w, g.ow);
                for oy in 0..g.oh {
                    let Some(iy) = g.source(oy, ki, g.h) else {
                        continue;
                    };
                    let dst = &mut plane[iy * g.w..][..g.w];
                    let srow = &src[oy * g.ow..][..g.ow][xs.clone()];
                    for (d, v) in dst[x0..].iter_mut().step_by(g.stride).zip(srow) {
                        *d += v;
                    }
                }
            }
        }
    }
}

/// `[b, c, n]` to `[c, b·n]` (channel-major), both contiguous.
fn to_channel_major(x: &[f32], b: usize, c: usize, n: usize) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    for bi in 0..b {
        for ci in 0..c {
            out[(ci * b + bi) * n..][..n].copy_from_slice(&x[(bi * c + ci) * n..][..n]);
        }
    }
    out
}

/// `[c, b·n]` into `out` as `[b, c, n]`.
fn from_channel_major(x: &[f32], b: usize, c: usize, n: usize, out: &mut [f32]) {
    for ci in 0..c {
        for bi in 0..b {
            out[(bi * c + ci) * n..][..n].copy_from_slice(&x[(ci * b + bi) * n..][..n]);
        }
    }
}

/// Splits `data` (whole images of `image_len` values) into the images of
/// each run of tiles, in order.
fn split_by_runs<'a>(
    data: &'a mut [f32],
    runs: &[Vec<std::ops::Range<usize>>],
    image_len: usize,
) -> Vec<&'a mut [f32]> {
    let mut rest = data;
    runs.iter()
        .map(|run| {
            let images = run.iter().map(|r| r.len()).sum::<usize>();
            let (head, tail) = std::mem::take(&mut rest).split_at_mut(images * image_len);
            rest = tail;
            head
        })
        .collect()
}

/// Runs `f(tile, its images of out)` for every tile, a run of tiles per
/// thread, each returning a partial result that is summed (the weight
/// gradient) when `partial_len > 0`.
fn for_each_tile(
    runs: Vec<Vec<std::ops::Range<usize>>>,
    out: &mut [f32],
    image_len: usize,
    partial_len: usize,
    f: impl Fn(std::ops::Range<usize>, &mut [f32], &mut [f32]) + Sync,
) -> Vec<f32> {
    let chunks = split_by_runs(out, &runs, image_len);
    let partials = pool::parallel_parts(runs.into_iter().zip(chunks).collect(), |(run, chunk)| {
        let mut partial = vec![0f32; partial_len];
        let mut rest = chunk;
        for tile in run {
            let (head, tail) = std::mem::take(&mut rest).split_at_mut(tile.len() * image_len);
            rest = tail;
            f(tile, head, &mut partial);
        }
        partial
    });
    let mut total = vec![0f32; partial_len];
    for p in partials {
        for (t, v) in total.iter_mut().zip(p) {
            *t += v;
        }
    }
    total
}

/// A stride-1 "valid" correlation on padded planes: `c_in` planes of `hp`
/// rows of `wp` values in (`wp` at least `blocks(ow) + k - 1`, zeros past
/// the data), `c_out` planes of `oh x ow` out.
#[derive(Clone, Copy, Debug)]
struct Valid {
    c_in: usize,
    c_out: usize,
    k: usize,
    hp: usize,
    wp: usize,
    oh: usize,
    ow: usize,
}

/// Output columns computed together: four vector registers of eight.
const BLOCK: usize = 32;

/// `n` rounded up to whole [`BLOCK`]s.
fn blocks(n: usize) -> usize {
    n.div_ceil(BLOCK) * BLOCK
}

impl Valid {
    /// The correlation of `c_in` planes of `h x w` padded by `pad` with
    /// `k x k` kernels, and the padded row length it reads.
    fn new(c_in: usize, c_out: usize, k: usize, h: usize, w: usize, pad: usize) -> Self {
        let (hp, ow) = (h + 2 * pad, w + 2 * pad + 1 - k);
        Self {
            c_in,
            c_out,
            k,
            hp,
            wp: (blocks(ow) + k - 1).max(w + 2 * pad),
            oh: hp + 1 - k,
            ow,
        }
    }

    /// `planes` planes of `h x w` from `x` with `pad` zeros before each row
    /// and row, laid out as this correlation reads them.
    fn pad(&self, x: &[f32], planes: usize, h: usize, w: usize, pad: usize) -> Vec<f32> {
        let mut out = vec![0f32; planes * self.hp * self.wp];
        for p in 0..planes {
            for y in 0..h {
                out[(p * self.hp + y + pad) * self.wp + pad..][..w]
                    .copy_from_slice(&x[(p * h + y) * w..][..w]);
            }
        }
        out
    }
}

simd_fn! {
    /// `out[o, y, x] = Σ w[o, c, a, b] · xp[c, y + a, x + b]` for one image
    /// (stride 1, padding in `xp`): a direct convolution, 32 output columns
    /// at a time in four independent registers (no patch matrix: with a 4x4
    /// kernel it would be 16 times the image).
    fn valid_corr<M>(out: &mut [f32], xp: &[f32], w: &[f32], v: Valid) {
        let kk = v.k * v.k;
        for o in 0..v.c_out {
            let wo = &w[o * v.c_in * kk..][..v.c_in * kk];
            for y in 0..v.oh {
                let out_row = &mut out[(o * v.oh + y) * v.ow..][..v.ow];
                for x0 in (0..v.ow).step_by(BLOCK) {
                    let mut acc = [[0f32; 8]; 4];
                    for c in 0..v.c_in {
                        for a in 0..v.k {
                            let row = &xp[(c * v.hp + y + a) * v.wp + x0..][..BLOCK + v.k - 1];
                            for b in 0..v.k {
                                let wv = wo[c * kk + a * v.k + b];
                                let r = &row[b..b + BLOCK];
                                for s in 0..4 {
                                    for l in 0..8 {
                                        acc[s][l] = M::mul_add(wv, r[8 * s + l], acc[s][l]);
                                    }
                                }
                            }
                        }
                    }
                    let width = BLOCK.min(v.ow - x0);
                    let flat = acc.as_flattened();
                    out_row[x0..x0 + width].copy_from_slice(&flat[..width]);
                }
            }
        }
    }
}

simd_fn! {
    /// `dw[o, c, a, b] += Σ gy[o, y, x] · xp[c, y + a, x + b]` for one
    /// image: the weight gradient of [`valid_corr`]. `gy` rows are padded
    /// with zeros to whole blocks.
    fn valid_corr_weight_grad<M>(dw: &mut [f32], gy: &[f32], xp: &[f32], v: Valid) {
        let (kk, gw) = (v.k * v.k, blocks(v.ow));
        for o in 0..v.c_out {
            let g = &gy[o * v.oh * gw..][..v.oh * gw];
            for c in 0..v.c_in {
                for a in 0..v.k {
                    for b in 0..v.k {
                        let mut acc = [[0f32; 8]; 4];
                        for y in 0..v.oh {
                            let xr = &xp[(c * v.hp + y + a) * v.wp + b..][..gw];
                            let gr = &g[y * gw..][..gw];
                            for (gb, xb) in gr.chunks_exact(BLOCK).zip(xr.chunks_exact(BLOCK)) {
                                for s in 0..4 {
                                    for l in 0..8 {
                                        acc[s][l] = M::mul_add(gb[8 * s + l], xb[8 * s + l], acc[s][l]);
                                    }
                                }
                            }
                        }
                        dw[(o * v.c_in + c) * kk + a * v.k + b] += acc.as_flattened().iter().sum::<f32>();
                    }
                }
            }
        }
    }
}

/// `planes` planes of `h x w` with rows padded by zeros to `width`.
fn widen_rows(x: &[f32], planes: usize, h: usize, w: usize, width: usize) -> Vec<f32> {
    let mut out = vec![0f32; planes * h * width];
    for r in 0..planes * h {
        out[r * width..][..w].copy_from_slice(&x[r * w..][..w]);
    }
    out
}

/// `w [o, c, k, k]` as the weights of the adjoint correlation:
/// `[c, o, k, k]`, each kernel turned by 180 degrees.
fn flipped_transpose(w: &[f32], o: usize, c: usize, k: usize) -> Vec<f32> {
    let kk = k * k;
    let mut out = vec![0f32; w.len()];
    for oi in 0..o {
        for ci in 0..c {
            for t in 0..kk {
                out[(ci * o + oi) * kk + (kk - 1 - t)] = w[(oi * c + ci) * kk + t];
            }
        }
    }
    out
}

fn dims4(l: &Layout) -> candle_core::Result<(usize, usize, usize, usize)> {
    l.shape().dims4()
}

fn contiguous<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> candle_core::Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&v[a..b]),
        _ => candle_core::bail!("{what}: fused convolutions take contiguous f32 tensors"),
    }
}

/// `conv2d(x [B, C, H, W], w [O, C, k, k])`, no bias.
#[derive(Debug, Clone, Copy)]
struct Conv2dOp {
    stride: usize,
    pad: usize,
}

/// `conv_transpose2d(x [B, Ci, H, W], w [Ci, Co, k, k])`, no bias.
#[derive(Debug, Clone, Copy)]
struct ConvTranspose2dOp {
    stride: usize,
    pad: usize,
}

/// PyTorch's `F.conv2d(x, w, bias, stride, padding)` for `f32` CPU tensors.
pub fn conv2d(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    pad: usize,
) -> candle_core::Result<Tensor> {
    let y = x
        .contiguous()?
        .apply_op2(&w.contiguous()?, Conv2dOp { stride, pad })?;
    with_bias(y, bias)
}

/// PyTorch's `F.conv_transpose2d(x, w, bias, stride, padding)` (no output
/// padding) for `f32` CPU tensors.
pub fn conv_transpose2d(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    pad: usize,
) -> candle_core::Result<Tensor> {
    let y = x
        .contiguous()?
        .apply_op2(&w.contiguous()?, ConvTranspose2dOp { stride, pad })?;
    with_bias(y, bias)
}

fn with_bias(y: Tensor, bias: Option<&Tensor>) -> candle_core::Result<Tensor> {
    match bias {
        Some(b) => y.broadcast_add(&b.reshape((1, (), 1, 1))?),
        None => Ok(y),
    }
}

impl Conv2dOp {
    fn geometry(&self, x: (usize, usize, usize, usize), k: usize) -> candle_core::Result<Geometry> {
        Geometry::of_conv(x.0, x.1, x.2, x.3, k, self.stride, self.pad)
    }
}

impl CustomOp2 for Conv2dOp {
    fn name(&self) -> &'static str {
        "fused-conv2d"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (xd, wd) = (dims4(xl)?, dims4(wl)?);
        let (o, c, k, k2) = wd;
        if c != xd.1 || k != k2 {
            candle_core::bail!("conv2d: input {xd:?} and weight {wd:?} do not fit");
        }
        let g = self.geometry(xd, k)?;
        let (x, w) = (contiguous(xs, xl, "conv2d")?, contiguous(ws, wl, "conv2d")?);
        let n = g.oh * g.ow;
        let mut y = vec![0f32; g.batch * o * n];
        let image_len = g.c * g.h * g.w;
        for_each_tile(tile_runs(g), &mut y, o * n, 0, |tile, out, _| {
            let images = tile.len();
            if g.stride == 1 {
                let v = Valid::new(g.c, o, g.k, g.h, g.w, g.pad);
                for (t, b) in tile.enumerate() {
                    let xp = v.pad(&x[b * image_len..][..image_len], g.c, g.h, g.w, g.pad);
                    valid_corr(&mut out[t * o * n..][..o * n], &xp, w, v);
                }
                return;
            }
            let cols = im2col(x, g, tile);
            let yc = matmul_new(
                MatRef::row_major(w, o, g.rows()),
                MatRef::row_major(&cols, g.rows(), images * n),
            );
            from_channel_major(&yc, images, o, n, out);
        });
        Ok((CpuStorage::F32(y), Shape::from((g.batch, o, g.oh, g.ow))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        gy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (o, _, k, _) = w.dims4()?;
        let g = self.geometry(x.dims4()?, k)?;
        let n = g.oh * g.ow;
        let gy = gy.contiguous()?;
        let want_dx = x.track_op();
        let image_len = g.c * g.h * g.w;
        let mut dx = vec![0f32; if want_dx { g.batch * image_len } else { 0 }];
        let dw = with_contiguous(&gy, |gy| {
            with_contiguous(x, |xv| {
                with_contiguous(w, |wv| {
                    let wm = MatRef::row_major(wv, o, g.rows());
                    let wflip = if g.stride == 1 {
                        flipped_transpose(wv, o, g.c, g.k)
                    } else {
                        Vec::new()
                    };
                    let dx_len = if want_dx { image_len } else { 0 };
                    for_each_tile(
                        tile_runs(g),
                        &mut dx,
                        dx_len,
                        o * g.rows(),
                        |tile, dx, dw| {
                            let images = tile.len();
                            if g.stride == 1 {
                                let v = Valid::new(g.c, o, g.k, g.h, g.w, g.pad);
                                // The input gradient correlates the output gradient, padded by
                                // k - 1 - pad, with the turned kernels.
                                let q = g.k - 1 - g.pad.min(g.k - 1);
                                let back = Valid::new(o, g.c, g.k, g.oh, g.ow, q);
                                for (t, b) in tile.enumerate() {
                                    let gyb = &gy[b * o * n..][..o * n];
                                    let xp = v.pad(
                                        &xv[b * image_len..][..image_len],
                                        g.c,
                                        g.h,
                                        g.w,
                                        g.pad,
                                    );
                                    valid_corr_weight_grad(
                                        dw,
                                        &widen_rows(gyb, o, g.oh, g.ow, blocks(g.ow)),
                                        &xp,
                                        v,
                                    );
                                    if want_dx {
                                        let gp = back.pad(gyb, o, g.oh, g.ow, q);
                                        valid_corr(
                                            &mut dx[t * image_len..][..image_len],
                                            &gp,
                                            &wflip,
                                            back,
                                        );
                                    }
                                }
                                return;
                            }
                            let gt = to_channel_major(
                                &gy[tile.start * o * n..tile.end * o * n],
                                images,
                                o,
                                n,
                            );
                            let gm = MatRef::row_major(&gt, o, images * n);
                            let cols = im2col(xv, g, tile);
                            matmul_into(
                                dw,
                                gm,
                                MatRef::row_major(&cols, g.rows(), images * n).t(),
                                true,
                            );
                            if want_dx {
                                let dcols = matmul_new(wm.t(), gm);
                                col2im(&dcols, g, images, dx);
                            }
                        },
                    )
                })
            })
        })???;
        let dx = if want_dx {
            Some(cpu_tensor(dx, x.dims())?)
        } else {
            None
        };
        Ok((dx, Some(cpu_tensor(dw, w.dims())?)))
    }
}

impl ConvTranspose2dOp {
    /// The geometry of the convolution this one is the adjoint of: its
    /// "image" is the output `[b, co, oh, ow]`, its positions the input's.
    fn geometry(
        &self,
        x: (usize, usize, usize, usize),
        co: usize,
        k: usize,
    ) -> candle_core::Result<Geometry> {
        let (b, _, h, w) = x;
        let size = |n: usize| ((n.max(1) - 1) * self.stride + k).checked_sub(2 * self.pad);
        let (Some(oh), Some(ow)) = (size(h), size(w)) else {
            candle_core::bail!("conv_transpose2d: padding {} leaves no output", self.pad);
        };
        let g = Geometry::of_conv(b, co, oh, ow, k, self.stride, self.pad)?;
        if (g.oh, g.ow) != (h, w) {
            candle_core::bail!("conv_transpose2d: {h}x{w} inputs do not invert to {oh}x{ow}");
        }
        Ok(g)
    }
}

impl CustomOp2 for ConvTranspose2dOp {
    fn name(&self) -> &'static str {
        "fused-conv-transpose2d"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (xd, wd) = (dims4(xl)?, dims4(wl)?);
        let (ci, co, k, k2) = wd;
        if ci != xd.1 || k != k2 {
            candle_core::bail!("conv_transpose2d: input {xd:?} and weight {wd:?} do not fit");
        }
        let g = self.geometry(xd, co, k)?;
        let (x, w) = (
            contiguous(xs, xl, "conv_transpose2d")?,
            contiguous(ws, wl, "conv_transpose2d")?,
        );
        let n = g.oh * g.ow;
        let image_len = co * g.h * g.w;
        let mut y = vec![0f32; g.batch * image_len];
        for_each_tile(tile_runs(g), &mut y, image_len, 0, |tile, out, _| {
            let images = tile.len();
            let xt = to_channel_major(&x[tile.start * ci * n..tile.end * ci * n], images, ci, n);
            let cols = matmul_new(
                MatRef::row_major(w, ci, g.rows()).t(),
                MatRef::row_major(&xt, ci, images * n),
            );
            col2im(&cols, g, images, out);
        });
        Ok((CpuStorage::F32(y), Shape::from((g.batch, co, g.h, g.w))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        gy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (ci, co, k, _) = w.dims4()?;
        let g = self.geometry(x.dims4()?, co, k)?;
        let n = g.oh * g.ow;
        let gy = gy.contiguous()?;
        let want_dx = x.track_op();
        let image_len = ci * n;
        let mut dx = vec![0f32; if want_dx { g.batch * image_len } else { 0 }];
        let dw = with_contiguous(&gy, |gy| {
            with_contiguous(x, |xv| {
                with_contiguous(w, |wv| {
                    let wm = MatRef::row_major(wv, ci, g.rows());
                    let dx_len = if want_dx { image_len } else { 0 };
                    for_each_tile(
                        tile_runs(g),
                        &mut dx,
                        dx_len,
                        ci * g.rows(),
                        |tile, dx, dw| {
                            let images = tile.len();
                            let cols = im2col(gy, g, tile.clone());
                            let cm = MatRef::row_major(&cols, g.rows(), images * n);
                            let xt = to_channel_major(
                                &xv[tile.start * image_len..tile.end * image_len],
                                images,
                                ci,
                                n,
                            );
                            matmul_into(dw, MatRef::row_major(&xt, ci, images * n), cm.t(), true);
                            if want_dx {
                                let dxc = matmul_new(wm, cm);
                                from_channel_major(&dxc, images, ci, n, dx);
                            }
                        },
                    )
                })
            })
        })???;
        let dx = if want_dx {
            Some(cpu_tensor(dx, x.dims())?)
        } else {
            None
        };
        Ok((dx, Some(cpu_tensor(dw, w.dims())?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn rand(shape: &[usize], seed: u64) -> Tensor {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|i| (((i as u64 + 1) * (seed * 2 + 7919)) % 1000) as f32 / 500.0 - 1.0)
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    /// Forward values and both gradients equal candle's own convolutions,
    /// for the shapes the conv VAE uses and odd ones.
    #[test]
    fn convolutions_match_candle_forward_and_backward() {
        let max_diff = crate::test_util::max_abs_diff;
        // (batch, c_in, c_out, size, k, stride, pad)
        for (b, ci, co, s, k, st, p) in [
            (3, 3, 4, 8, 4, 2, 1),
            (2, 5, 3, 7, 3, 1, 1),
            (2, 2, 6, 1, 8, 1, 0),
            (1, 4, 2, 5, 4, 2, 1),
            (4, 3, 3, 9, 4, 1, 1),
            // Several tiles of images, split between threads.
            (40, 16, 4, 16, 4, 2, 1),
        ] {
            for transposed in [false, true] {
                let x = Var::from_tensor(&rand(&[b, ci, s, s], 1)).unwrap();
                let wshape = if transposed {
                    [ci, co, k, k]
                } else {
                    [co, ci, k, k]
                };
                let w = Var::from_tensor(&rand(&wshape, 2)).unwrap();
                let (fused, plain) = if transposed {
                    if (s - 1) * st + k < 2 * p + 1 {
                        continue;
                    }
                    (
                        conv_transpose2d(x.as_tensor(), w.as_tensor(), None, st, p).unwrap(),
                        x.as_tensor()
                            .conv_transpose2d(w.as_tensor(), p, 0, st, 1)
                            .unwrap(),
                    )
                } else {
                    if s + 2 * p < k {
                        continue;
                    }
                    (
                        conv2d(x.as_tensor(), w.as_tensor(), None, st, p).unwrap(),
                        x.as_tensor().conv2d(w.as_tensor(), p, st, 1, 1).unwrap(),
                    )
                };
                let what = format!("transposed {transposed}, {:?}", (b, ci, co, s, k, st, p));
                assert_eq!(fused.dims(), plain.dims(), "{what}");
                assert!(max_diff(&fused, &plain) < 1e-4, "{what}");
                let target = rand(fused.dims(), 3);
                let gf = (&fused * &target)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap();
                let gp = (&plain * &target)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap();
                for v in [&x, &w] {
                    let d = max_diff(gf.get(v).unwrap(), gp.get(v).unwrap());
                    assert!(d < 1e-3, "{what}: gradient differs by {d}");
                }
            }
        }
    }

    #[test]
    fn a_kernel_larger_than_the_input_is_an_error() {
        let x = rand(&[1, 1, 2, 2], 1);
        let w = rand(&[1, 1, 4, 4], 2);
        assert!(conv2d(&x, &w, None, 1, 0).is_err());
    }
}
