//! Vectorisable `f32` building blocks of the fused CPU kernels: a fast
//! `exp` and lane-wise sum and max reductions.
//!
//! They are plain loops over fixed-size chunks, which LLVM turns into SIMD
//! code. Kernels built from them are declared with `simd_fn!`, which
//! compiles the body for AVX-512, for AVX2+FMA and for the baseline x86-64
//! and picks the best the CPU has at run time ([`level`]), so the binary
//! runs on any x86-64 and uses what it finds.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU8, Ordering};

/// Independent accumulators per reduction: two AVX-512 registers.
const LANES: usize = 32;

/// Environment variable capping the instruction set of the kernels
/// (`baseline`, `avx2`, `avx512`), to compare or rule out a variant.
pub const SWITCH: &str = "SHIMMER_SIMD";

/// Instruction sets the kernels are compiled for, in increasing order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// x86-64 without extensions (SSE2), or any other architecture.
    Baseline = 0,
    /// AVX2 with FMA.
    Avx2 = 1,
    /// AVX-512 (F, BW, DQ, VL) with FMA.
    Avx512 = 2,
}

impl Level {
    /// `baseline`, `avx2` or `avx512` (the [`SWITCH`] values).
    pub fn name(self) -> &'static str {
        match self {
            Level::Baseline => "baseline",
            Level::Avx2 => "avx2",
            Level::Avx512 => "avx512",
        }
    }
}

/// A cap on [`level`] set by [`cap_level`] (`u8::MAX`: none).
static CAP: AtomicU8 = AtomicU8::new(u8::MAX);

/// The best level this CPU supports, capped by [`SWITCH`] and [`cap_level`].
pub fn level() -> Level {
    static DETECTED: OnceLock<Level> = OnceLock::new();
    let detected = *DETECTED.get_or_init(|| {
        let best = detect();
        match std::env::var(SWITCH).as_deref() {
            Ok("baseline") => Level::Baseline,
            Ok("avx2") => best.min(Level::Avx2),
            _ => best,
        }
    });
    match CAP.load(Ordering::Relaxed) {
        0 => Level::Baseline,
        1 => detected.min(Level::Avx2),
        _ => detected,
    }
}

/// Caps [`level`] for the whole process (`None` lifts the cap): lets the
/// tests run every variant on one machine.
pub fn cap_level(cap: Option<Level>) {
    CAP.store(cap.map_or(u8::MAX, |l| l as u8), Ordering::Relaxed);
}

#[cfg(target_arch = "x86_64")]
fn detect() -> Level {
    use std::arch::is_x86_feature_detected as has;
    if has!("avx512f") && has!("avx512bw") && has!("avx512dq") && has!("avx512vl") && has!("fma") {
        Level::Avx512
    } else if has!("avx2") && has!("fma") {
        Level::Avx2
    } else {
        Level::Baseline
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> Level {
    Level::Baseline
}

/// Declares a function whose body is compiled for AVX-512, for AVX2+FMA
/// and for the baseline, the best one [`level`] allows chosen at each call.
/// The body should be plain loops over slices calling the
/// `#[inline(always)]` helpers of this module, so that all of it lands in
/// each copy. With a type parameter (`fn name<M>(…)`), the body gets `M:`
/// [`MulAdd`]: [`Fused`] in the FMA copies, [`Separate`] in the baseline.
macro_rules! simd_fn {
    ($(#[$meta:meta])* $vis:vis fn $name:ident<$m:ident>($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            #[allow(clippy::extra_unused_type_parameters)] // kernels without `exp`
            fn imp<$m: $crate::simd::MulAdd>($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                use $crate::simd::{Fused, Level, level};
                #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
                fn avx512($($arg: $ty),*) $(-> $ret)? {
                    imp::<Fused>($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) $(-> $ret)? {
                    imp::<Fused>($($arg),*)
                }
                match level() {
                    // SAFETY: `level` names only instruction sets the CPU has.
                    Level::Avx512 => return unsafe { avx512($($arg),*) },
                    // SAFETY: as above.
                    Level::Avx2 => return unsafe { avx2($($arg),*) },
                    Level::Baseline => {}
                }
            }
            imp::<$crate::simd::Separate>($($arg),*)
        }
    };
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $crate::simd::simd_fn! {
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

    simd_fn! {
        fn simd_exp<M>(xs: &mut [f32]) {
            for x in xs.iter_mut() {
                *x = exp::<M>(*x);
            }
        }
    }

    /// Every variant this CPU can run gives the baseline's numbers (to the
    /// ulps FMA changes), kernels included.
    #[test]
    fn every_level_computes_the_same() {
        use candle_core::{Device, Tensor};
        let xs: Vec<f32> = (0..1000).map(|i| (i as f32 - 500.0) * 0.17).collect();
        let x = Tensor::from_vec(xs[..120].to_vec(), (20, 6), &Device::Cpu).unwrap();
        let y = (x.sin().unwrap() * 2.0).unwrap();
        let run = || {
            let mut e = xs.clone();
            simd_exp(&mut e);
            let clip = super::super::clip::clip_loss(&x, &y).unwrap();
            let tanh = super::super::elementwise::tanh(&x).unwrap();
            (
                e,
                simd_sum(&xs),
                simd_max(&xs),
                clip.to_scalar::<f32>().unwrap(),
                tanh,
            )
        };
        cap_level(Some(Level::Baseline));
        let base = run();
        for l in [Level::Avx2, Level::Avx512] {
            cap_level(Some(l));
            let got = run();
            for (a, b) in got.0.iter().zip(&base.0) {
                assert!((a - b).abs() <= 4e-7 * b.abs(), "exp at {l:?}: {a} vs {b}");
            }
            assert!((got.1 - base.1).abs() < 1e-2, "sum at {l:?}");
            assert_eq!(got.2, base.2, "max at {l:?}");
            assert!((got.3 - base.3).abs() < 1e-5, "clip loss at {l:?}");
            assert!(
                crate::test_util::max_abs_diff(&got.4, &base.4) < 1e-6,
                "tanh at {l:?}"
            );
        }
        cap_level(None);
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
