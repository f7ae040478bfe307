//! Vectorisable `f32` building blocks of the fused CPU kernels: a fast
//! `exp` and lane-wise sum and max reductions.
//!
//! They are plain loops over fixed-size chunks, which LLVM turns into SIMD
//! code. Kernels built from them are declared with [`simd_fn!`], which
//! compiles the body a second time for AVX2+FMA and picks that version at
//! run time when the CPU has it, so the binary still runs on any x86-64.

/// Independent accumulators per reduction: four AVX2 registers.
const LANES: usize = 32;

/// Declares a function whose body is compiled twice, for the baseline CPU
/// and for AVX2+FMA, the latter chosen at run time when available. The body
/// should be plain loops over slices calling the `#[inline(always)]`
/// helpers of this module, so that all of it lands in the AVX2 copy. With a
/// type parameter (`fn name<M>(…)`), the body gets `M:` [`MulAdd`]:
/// [`Fused`] in the FMA copy, [`Separate`] in the baseline one.
macro_rules! simd_fn {
    ($(#[$meta:meta])* $vis:vis fn $name:ident<$m:ident>($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            #[allow(clippy::extra_unused_type_parameters)] // kernels without `exp`
            fn imp<$m: $crate::kernels::simd::MulAdd>($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) $(-> $ret)? {
                    imp::<$crate::kernels::simd::Fused>($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU supports the features `avx2` was compiled for.
                    return unsafe { avx2($($arg),*) };
                }
            }
            imp::<$crate::kernels::simd::Separate>($($arg),*)
        }
    };
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $crate::kernels::simd::simd_fn! {
            $(#[$meta])* $vis fn $name<_M>($($arg: $ty),*) $(-> $ret)? $body
        }
    };
}
pub(crate) use simd_fn;

/// `a · b + c`, as one fused instruction or as two.
pub trait MulAdd {
    /// `a · b + c`.
    fn mul_add(a: f32, b: f32, c: f32) -> f32;
}

/// One rounding, for code compiled with FMA (without it, `f32::mul_add` is
/// a slow library call).
pub struct Fused;

/// Two roundings, for the baseline instruction set.
pub struct Separate;

impl MulAdd for Fused {
    #[inline(always)]
    fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }
}

impl MulAdd for Separate {
    #[inline(always)]
    fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        a * b + c
    }
}

/// `e^x` in `f32` (Cephes' `expf` polynomial, about 1 ulp), branch-free so
/// that loops over it vectorise. Inputs below -87.3 give the smallest
/// normal number instead of a denormal or zero; NaN stays NaN.
#[inline(always)]
pub fn exp<M: MulAdd>(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5 * 2^23: adding it rounds to an integer held in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.33, 88.37);
    let t = M::mul_add(x, LOG2E, ROUND);
    let n = t - ROUND;
    let r = M::mul_add(n, -LN2_LO, M::mul_add(n, -LN2_HI, x));
    let mut p: f32 = 1.987_569_1e-4;
    p = M::mul_add(p, r, 1.398_199_9e-3);
    p = M::mul_add(p, r, 8.333_452e-3);
    p = M::mul_add(p, r, 4.166_579_6e-2);
    p = M::mul_add(p, r, 1.666_666_5e-1);
    p = M::mul_add(p, r, 0.5);
    let poly = M::mul_add(p * r, r, r + 1.0);
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

    fn check_exp<M: MulAdd>() {
        let mut worst = 0f32;
        let mut x = -87.0f32;
        while x < 88.0 {
            let want = x.exp();
            let rel = ((exp::<M>(x) - want) / want).abs();
            worst = worst.max(rel);
            x += 0.013;
        }
        assert!(worst < 2.5e-7, "worst relative error {worst}");
        assert_eq!(exp::<M>(0.0), 1.0);
        assert!(exp::<M>(f32::NAN).is_nan());
        assert!(exp::<M>(-1000.0) > 0.0 && exp::<M>(-1000.0) < 1.2e-38);
    }

    #[test]
    fn exp_is_within_two_ulps_of_libm() {
        check_exp::<Fused>();
        check_exp::<Separate>();
    }

    simd_fn! {
        fn simd_sum(xs: &[f32]) -> f32 {
            sum(xs)
        }
    }

    simd_fn! {
        fn simd_max(xs: &[f32]) -> f32 {
            max(xs)
        }
    }

    #[test]
    fn reductions_match_sequential_ones() {
        let xs: Vec<f32> = (0..1000).map(|i| ((i * 37) % 101) as f32 - 50.0).collect();
        for n in [0, 1, 31, 32, 33, 1000] {
            let s: f32 = xs[..n].iter().sum();
            assert!((simd_sum(&xs[..n]) - s).abs() < 1e-3, "sum of {n}");
            let m = xs[..n].iter().fold(f32::NEG_INFINITY, |a, b| a.max(*b));
            assert_eq!(simd_max(&xs[..n]), m, "max of {n}");
        }
    }
}
