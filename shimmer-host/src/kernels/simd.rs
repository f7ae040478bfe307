//! Vectorisable `f32` building blocks of the fused CPU kernels: a fast
//! `exp` and lane-wise sum and max reductions.
//!
//! They are plain loops over fixed-size chunks, which LLVM turns into SIMD
//! code; callers run them inside [`dispatch`], which compiles them for the
//! best instruction set the CPU has (AVX-512, AVX2+FMA, …) and picks that
//! version at run time, so the binary still runs on any x86-64.

/// Independent accumulators per reduction: enough for two AVX-512 registers.
const LANES: usize = 32;

/// Runs `f` compiled for the CPU's best SIMD instruction set (`pulp`).
#[inline(always)]
pub fn dispatch<R>(f: impl FnOnce() -> R) -> R {
    pulp::Arch::new().dispatch(f)
}

/// `e^x` in `f32` (Cephes' `expf` polynomial, about 1 ulp), branch-free so
/// that loops over it vectorise. Inputs below -87.3 give the smallest
/// normal number instead of a denormal or zero; NaN stays NaN.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5 * 2^23: adding it rounds to an integer held in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.33, 88.37);
    let t = x * LOG2E + ROUND;
    let n = t - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 5.000_000_1e-1;
    let poly = p * r * r + r + 1.0;
    // 2^n: the integer n sits in t's low bits, so (bits(t) + 127) << 23 is
    // the float 2^n once the exponent field's overflow is shifted out.
    let two_n = f32::from_bits(t.to_bits().wrapping_add(127) << 23);
    poly * two_n
}

/// Sum of `xs` with `LANES` independent accumulators (vectorises; the
/// rounding differs from a sequential sum by a few ulps).
#[inline(always)]
pub fn sum(xs: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = xs.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Largest element of `xs` (`-inf` when empty; NaNs are skipped, as
/// `f32::max` does).
#[inline(always)]
pub fn max(xs: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = xs.chunks_exact(LANES);
    let tail = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |m, v| m.max(*v));
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a = a.max(*v);
        }
    }
    acc.iter().fold(tail, |m, v| m.max(*v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_two_ulps_of_libm() {
        let mut worst = 0f32;
        let mut x = -87.0f32;
        while x < 88.0 {
            let want = x.exp();
            let rel = ((exp(x) - want) / want).abs();
            worst = worst.max(rel);
            x += 0.013;
        }
        assert!(worst < 2.5e-7, "worst relative error {worst}");
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(f32::NAN).is_nan());
        assert!(exp(-1000.0) > 0.0 && exp(-1000.0) < 1.2e-38);
    }

    #[test]
    fn reductions_match_sequential_ones() {
        let xs: Vec<f32> = (0..1000).map(|i| ((i * 37) % 101) as f32 - 50.0).collect();
        for n in [0, 1, 31, 32, 33, 1000] {
            let s: f32 = xs[..n].iter().sum();
            assert!((dispatch(|| sum(&xs[..n])) - s).abs() < 1e-3, "sum of {n}");
            let m = xs[..n].iter().fold(f32::NEG_INFINITY, |a, b| a.max(*b));
            assert_eq!(dispatch(|| max(&xs[..n])), m, "max of {n}");
        }
    }
}
