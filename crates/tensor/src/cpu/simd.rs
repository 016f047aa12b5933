//! The small SIMD vocabulary the float kernels are written in, and the per-thread cap on the
//! detected [`Isa`] (`crate::isa`).
//!
//! Kernels are generic over [`Simd`] and compiled twice through [`dispatch!`]: once inside an
//! AVX-512 `#[target_feature]` function, once inside an AVX2+FMA one. Every `Simd` method is
//! `#[inline(always)]`, so the intrinsics land in the target-feature function and compile to
//! plain vector instructions. Machines without AVX2 (or not x86-64) run the scalar reference
//! from `ops/`.
#![allow(unsafe_code)]

use std::cell::Cell;

pub use crate::isa::{CpuFeatures, Isa, features};

thread_local! {
    static ISA_CAP: Cell<Option<Isa>> = const { Cell::new(None) };
}

/// The instruction set kernels called from this thread use: the best available, unless
/// capped by [`with_isa`]. Kernels read it once per call and hand it to their worker tasks.
pub fn isa() -> Isa {
    let best = features().best_isa();
    ISA_CAP.with(|c| c.get()).map_or(best, |cap| cap.min(best))
}

/// Runs `f` with kernels called from this thread capped at `cap` (tests compare every path
/// this way; a cap above what the CPU has changes nothing).
pub fn with_isa<R>(cap: Isa, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<Isa>);
    impl Drop for Restore {
        fn drop(&mut self) {
            ISA_CAP.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(ISA_CAP.with(|c| c.replace(Some(cap))));
    f()
}

/// Expands to a call of the generic kernel `$kernel(simd, args...)` on the path `$isa`
/// selects, or of `$fallback(args...)` on the scalar path. Arguments must be identifiers
/// with their types spelled out (they become parameters of the target-feature wrappers),
/// optionally preceded by type parameters (`<T: Bound>`) those types use.
macro_rules! dispatch {
    ($isa:expr, $kernel:path, $fallback:expr, $(<$($g:ident : $bound:path),+>)? ($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)?) => {{
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
        fn on_avx512$(<$($g: $bound),+>)?($($arg: $ty),*) $(-> $ret)? {
            // SAFETY: only called below when `isa()` reported AVX-512.
            $kernel(unsafe { $crate::cpu::simd::Avx512::new_unchecked() }, $($arg),*)
        }
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma,f16c")]
        fn on_avx2$(<$($g: $bound),+>)?($($arg: $ty),*) $(-> $ret)? {
            // SAFETY: only called below when `isa()` reported AVX2+FMA+F16C.
            $kernel(unsafe { $crate::cpu::simd::Avx2::new_unchecked() }, $($arg),*)
        }
        match $isa {
            // SAFETY: the CPU has the features these wrappers enable (see `features()`).
            #[cfg(target_arch = "x86_64")]
            $crate::isa::Isa::Avx512 | $crate::isa::Isa::Avx512Vnni => unsafe { on_avx512($($arg),*) },
            #[cfg(target_arch = "x86_64")]
            $crate::isa::Isa::Avx2 => unsafe { on_avx2($($arg),*) },
            _ => $fallback($($arg),*),
        }
    }};
}
pub(crate) use dispatch;

/// A vector of f32 lanes. Implementations are zero-sized tokens that can only be created
/// where their instruction set is known to be present, so the methods are safe to call.
pub(crate) trait Simd: Copy + Send + Sync {
    const LANES: usize;
    type V: Copy;

    fn splat(self, v: f32) -> Self::V;
    fn zero(self) -> Self::V {
        self.splat(0.0)
    }
    /// The first `LANES` values of `src` (panics if shorter).
    fn load(self, src: &[f32]) -> Self::V;
    /// Stores into the first `LANES` values of `dst` (panics if shorter).
    fn store(self, dst: &mut [f32], v: Self::V);
    /// # Safety
    /// `p` must be valid for reading `LANES` f32.
    unsafe fn load_ptr(self, p: *const f32) -> Self::V;
    /// # Safety
    /// `p` must be valid for writing `LANES` f32.
    unsafe fn store_ptr(self, p: *mut f32, v: Self::V);
    /// `LANES` f16 values (raw bits) widened to f32.
    fn load_f16(self, src: &[u16]) -> Self::V;
    /// `LANES` bf16 values (raw bits) widened to f32.
    fn load_bf16(self, src: &[u16]) -> Self::V;

    fn add(self, a: Self::V, b: Self::V) -> Self::V;
    fn sub(self, a: Self::V, b: Self::V) -> Self::V;
    fn mul(self, a: Self::V, b: Self::V) -> Self::V;
    fn div(self, a: Self::V, b: Self::V) -> Self::V;
    /// `a * b + c`, one rounding.
    fn fma(self, a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    fn max(self, a: Self::V, b: Self::V) -> Self::V;
    fn min(self, a: Self::V, b: Self::V) -> Self::V;
    fn abs(self, a: Self::V) -> Self::V;
    /// `|mag|` with the sign of `sign`.
    fn copysign(self, mag: Self::V, sign: Self::V) -> Self::V;
    /// Round to nearest integer (ties to even).
    fn round(self, a: Self::V) -> Self::V;
    fn floor(self, a: Self::V) -> Self::V;
    /// `2^n` for integral `n` in [-126, 127].
    fn pow2i(self, n: Self::V) -> Self::V;
    /// Per lane: `a < b ? x : y`.
    fn select_lt(self, a: Self::V, b: Self::V, x: Self::V, y: Self::V) -> Self::V;
    /// Per lane: `table[idx]` for integral `idx` in 0..8.
    fn table8(self, table: &[f32; 8], idx: Self::V) -> Self::V;
    /// Per lane: `table[bits]`, `bits` the lane rounded to f16 (to nearest even, as
    /// `half::f16::from_f32`) and read as an integer.
    fn lookup_f16(self, table: &F16Table, x: Self::V) -> Self::V;
    fn reduce_sum(self, a: Self::V) -> f32;
    fn reduce_max(self, a: Self::V) -> f32;

    /// A lane mask: the first `n <= LANES` lanes.
    type M: Copy;
    fn first_lanes(self, n: usize) -> Self::M;
    /// The lanes of `m` from `p`, zero elsewhere (only those lanes are read).
    /// # Safety
    /// `p` must be valid for reading the lanes of `m`.
    unsafe fn load_masked(self, m: Self::M, p: *const f32) -> Self::V;
    /// Stores the lanes of `m` to `p` (only those lanes are written).
    /// # Safety
    /// `p` must be valid for writing the lanes of `m`.
    unsafe fn store_masked(self, m: Self::M, p: *mut f32, v: Self::V);

    /// Loads `src.len() < LANES` values, the other lanes zero.
    #[inline(always)]
    fn load_partial(self, src: &[f32]) -> Self::V {
        let mut buf = [0f32; 16];
        buf[..src.len()].copy_from_slice(src);
        self.load(&buf)
    }
    /// Stores the first `dst.len() < LANES` lanes.
    #[inline(always)]
    fn store_partial(self, dst: &mut [f32], v: Self::V) {
        let mut buf = [0f32; 16];
        self.store(&mut buf, v);
        let n = dst.len();
        dst.copy_from_slice(&buf[..n]);
    }
}

/// A function of f16 values tabulated at every one of the 65536 bit patterns (the length is
/// the type's, so [`Simd::lookup_f16`] cannot index past it).
pub struct F16Table(pub [f32; 1 << 16]);

#[cfg(target_arch = "x86_64")]
pub(crate) use x86::{Avx2, Avx512};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::Simd;
    use std::arch::x86_64::*;

    /// Token for AVX-512 F/BW/VL (+ AVX2, FMA, F16C).
    #[derive(Clone, Copy)]
    pub(crate) struct Avx512(());

    impl Avx512 {
        /// # Safety
        /// The CPU must support AVX-512 F/BW/VL, AVX2, FMA and F16C.
        #[inline(always)]
        pub(crate) unsafe fn new_unchecked() -> Self {
            Self(())
        }
    }

    // SAFETY (whole impl): an `Avx512` exists only where the features are present; slice
    // methods check lengths before touching memory.
    impl Simd for Avx512 {
        const LANES: usize = 16;
        type V = __m512;

        #[inline(always)]
        fn splat(self, v: f32) -> __m512 {
            unsafe { _mm512_set1_ps(v) }
        }
        #[inline(always)]
        fn load(self, src: &[f32]) -> __m512 {
            assert!(src.len() >= 16);
            unsafe { _mm512_loadu_ps(src.as_ptr()) }
        }
        #[inline(always)]
        fn store(self, dst: &mut [f32], v: __m512) {
            assert!(dst.len() >= 16);
            unsafe { _mm512_storeu_ps(dst.as_mut_ptr(), v) }
        }
        #[inline(always)]
        unsafe fn load_ptr(self, p: *const f32) -> __m512 {
            unsafe { _mm512_loadu_ps(p) }
        }
        #[inline(always)]
        unsafe fn store_ptr(self, p: *mut f32, v: __m512) {
            unsafe { _mm512_storeu_ps(p, v) }
        }
        #[inline(always)]
        fn load_f16(self, src: &[u16]) -> __m512 {
            assert!(src.len() >= 16);
            unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(src.as_ptr().cast())) }
        }
        #[inline(always)]
        fn load_bf16(self, src: &[u16]) -> __m512 {
            assert!(src.len() >= 16);
            unsafe {
                let h = _mm256_loadu_si256(src.as_ptr().cast());
                _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)))
            }
        }
        #[inline(always)]
        fn add(self, a: __m512, b: __m512) -> __m512 {
            unsafe { _mm512_add_ps(a, b) }
        }
        #[inline(always)]
        fn sub(self, a: __m512, b: __m512) -> __m512 {
            unsafe { _mm512_sub_ps(a, b) }
        }
        #[inline(always)]
        fn mul(self, a: __m512, b: __m512) -> __m512 {
            unsafe { _mm512_mul_ps(a, b) }
        }
        #[inline(always)]
        fn div(self, a: __m512, b: __m512) -> __m512 {
            unsafe { _mm512_div_ps(a, b) }
        }
        #[inline(always)]
        fn fma(self, a: __m512, b: __m512, c: __m512) -> __m512 {
            unsafe { _mm512_fmadd_ps(a, b, c) }
        }
        #[inline(always)]
        fn max(self, a: __m512, b: __m512) -> __m512 {
            unsafe { _mm512_max_ps(a, b) }
        }
        #[inline(always)]
        fn min(self, a: __m512, b: __m512) -> __m512 {
            unsafe { _mm512_min_ps(a, b) }
        }
        #[inline(always)]
        fn abs(self, a: __m512) -> __m512 {
            unsafe { _mm512_abs_ps(a) }
        }
        #[inline(always)]
        fn copysign(self, mag: __m512, sign: __m512) -> __m512 {
            unsafe {
                let sign_bit = _mm512_set1_epi32(i32::MIN);
                let s = _mm512_and_si512(_mm512_castps_si512(sign), sign_bit);
                let m = _mm512_andnot_si512(sign_bit, _mm512_castps_si512(mag));
                _mm512_castsi512_ps(_mm512_or_si512(m, s))
            }
        }
        #[inline(always)]
        fn round(self, a: __m512) -> __m512 {
            unsafe { _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(a) }
        }
        #[inline(always)]
        fn floor(self, a: __m512) -> __m512 {
            unsafe { _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC }>(a) }
        }
        #[inline(always)]
        fn pow2i(self, n: __m512) -> __m512 {
            unsafe {
                let e = _mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127));
                _mm512_castsi512_ps(_mm512_slli_epi32::<23>(e))
            }
        }
        #[inline(always)]
        fn select_lt(self, a: __m512, b: __m512, x: __m512, y: __m512) -> __m512 {
            unsafe {
                let m = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(a, b);
                _mm512_mask_blend_ps(m, y, x)
            }
        }
        #[inline(always)]
        fn lookup_f16(self, table: &super::F16Table, x: __m512) -> __m512 {
            unsafe {
                let bits = _mm512_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(x);
                // Every u16 indexes one of the table's 65536 entries.
                _mm512_i32gather_ps::<4>(_mm512_cvtepu16_epi32(bits), table.0.as_ptr().cast())
            }
        }
        #[inline(always)]
        fn table8(self, table: &[f32; 8], idx: __m512) -> __m512 {
            unsafe {
                // Indices are 0..8, so only the low half of the permuted register is read.
                let t = _mm512_castps256_ps512(_mm256_loadu_ps(table.as_ptr()));
                _mm512_permutexvar_ps(_mm512_cvttps_epi32(idx), t)
            }
        }
        #[inline(always)]
        fn reduce_sum(self, a: __m512) -> f32 {
            unsafe { _mm512_reduce_add_ps(a) }
        }
        #[inline(always)]
        fn reduce_max(self, a: __m512) -> f32 {
            unsafe { _mm512_reduce_max_ps(a) }
        }

        type M = __mmask16;
        #[inline(always)]
        fn first_lanes(self, n: usize) -> __mmask16 {
            if n >= 16 {
                0xffff
            } else {
                ((1u32 << n) - 1) as __mmask16
            }
        }
        #[inline(always)]
        unsafe fn load_masked(self, m: __mmask16, p: *const f32) -> __m512 {
            unsafe { _mm512_maskz_loadu_ps(m, p) }
        }
        #[inline(always)]
        unsafe fn store_masked(self, m: __mmask16, p: *mut f32, v: __m512) {
            unsafe { _mm512_mask_storeu_ps(p, m, v) }
        }
    }

    /// Token for AVX2 + FMA + F16C.
    #[derive(Clone, Copy)]
    pub(crate) struct Avx2(());

    impl Avx2 {
        /// # Safety
        /// The CPU must support AVX2, FMA and F16C.
        #[inline(always)]
        pub(crate) unsafe fn new_unchecked() -> Self {
            Self(())
        }
    }

    // SAFETY (whole impl): an `Avx2` exists only where the features are present; slice
    // methods check lengths before touching memory.
    impl Simd for Avx2 {
        const LANES: usize = 8;
        type V = __m256;

        #[inline(always)]
        fn splat(self, v: f32) -> __m256 {
            unsafe { _mm256_set1_ps(v) }
        }
        #[inline(always)]
        fn load(self, src: &[f32]) -> __m256 {
            assert!(src.len() >= 8);
            unsafe { _mm256_loadu_ps(src.as_ptr()) }
        }
        #[inline(always)]
        fn store(self, dst: &mut [f32], v: __m256) {
            assert!(dst.len() >= 8);
            unsafe { _mm256_storeu_ps(dst.as_mut_ptr(), v) }
        }
        #[inline(always)]
        unsafe fn load_ptr(self, p: *const f32) -> __m256 {
            unsafe { _mm256_loadu_ps(p) }
        }
        #[inline(always)]
        unsafe fn store_ptr(self, p: *mut f32, v: __m256) {
            unsafe { _mm256_storeu_ps(p, v) }
        }
        #[inline(always)]
        fn load_f16(self, src: &[u16]) -> __m256 {
            assert!(src.len() >= 8);
            unsafe { _mm256_cvtph_ps(_mm_loadu_si128(src.as_ptr().cast())) }
        }
        #[inline(always)]
        fn load_bf16(self, src: &[u16]) -> __m256 {
            assert!(src.len() >= 8);
            unsafe {
                let h = _mm_loadu_si128(src.as_ptr().cast());
                _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h)))
            }
        }
        #[inline(always)]
        fn add(self, a: __m256, b: __m256) -> __m256 {
            unsafe { _mm256_add_ps(a, b) }
        }
        #[inline(always)]
        fn sub(self, a: __m256, b: __m256) -> __m256 {
            unsafe { _mm256_sub_ps(a, b) }
        }
        #[inline(always)]
        fn mul(self, a: __m256, b: __m256) -> __m256 {
            unsafe { _mm256_mul_ps(a, b) }
        }
        #[inline(always)]
        fn div(self, a: __m256, b: __m256) -> __m256 {
            unsafe { _mm256_div_ps(a, b) }
        }
        #[inline(always)]
        fn fma(self, a: __m256, b: __m256, c: __m256) -> __m256 {
            unsafe { _mm256_fmadd_ps(a, b, c) }
        }
        #[inline(always)]
        fn max(self, a: __m256, b: __m256) -> __m256 {
            unsafe { _mm256_max_ps(a, b) }
        }
        #[inline(always)]
        fn min(self, a: __m256, b: __m256) -> __m256 {
            unsafe { _mm256_min_ps(a, b) }
        }
        #[inline(always)]
        fn abs(self, a: __m256) -> __m256 {
            unsafe { _mm256_andnot_ps(_mm256_set1_ps(-0.0), a) }
        }
        #[inline(always)]
        fn copysign(self, mag: __m256, sign: __m256) -> __m256 {
            unsafe {
                let sign_bit = _mm256_set1_ps(-0.0);
                _mm256_or_ps(
                    _mm256_andnot_ps(sign_bit, mag),
                    _mm256_and_ps(sign_bit, sign),
                )
            }
        }
        #[inline(always)]
        fn round(self, a: __m256) -> __m256 {
            unsafe { _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(a) }
        }
        #[inline(always)]
        fn floor(self, a: __m256) -> __m256 {
            unsafe { _mm256_floor_ps(a) }
        }
        #[inline(always)]
        fn pow2i(self, n: __m256) -> __m256 {
            unsafe {
                let e = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
                _mm256_castsi256_ps(_mm256_slli_epi32::<23>(e))
            }
        }
        #[inline(always)]
        fn select_lt(self, a: __m256, b: __m256, x: __m256, y: __m256) -> __m256 {
            unsafe { _mm256_blendv_ps(y, x, _mm256_cmp_ps::<_CMP_LT_OQ>(a, b)) }
        }
        #[inline(always)]
        fn lookup_f16(self, table: &super::F16Table, x: __m256) -> __m256 {
            unsafe {
                let bits = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(x);
                // Every u16 indexes one of the table's 65536 entries.
                _mm256_i32gather_ps::<4>(table.0.as_ptr().cast(), _mm256_cvtepu16_epi32(bits))
            }
        }
        #[inline(always)]
        fn table8(self, table: &[f32; 8], idx: __m256) -> __m256 {
            unsafe {
                _mm256_permutevar8x32_ps(_mm256_loadu_ps(table.as_ptr()), _mm256_cvttps_epi32(idx))
            }
        }
        #[inline(always)]
        fn reduce_sum(self, a: __m256) -> f32 {
            unsafe {
                let s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps::<1>(a));
                let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
                let s = _mm_add_ss(s, _mm_movehdup_ps(s));
                _mm_cvtss_f32(s)
            }
        }
        #[inline(always)]
        fn reduce_max(self, a: __m256) -> f32 {
            unsafe {
                let s = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps::<1>(a));
                let s = _mm_max_ps(s, _mm_movehl_ps(s, s));
                let s = _mm_max_ss(s, _mm_movehdup_ps(s));
                _mm_cvtss_f32(s)
            }
        }

        type M = __m256i;
        #[inline(always)]
        fn first_lanes(self, n: usize) -> __m256i {
            let n = n.min(8) as i32;
            unsafe {
                _mm256_cmpgt_epi32(
                    _mm256_set1_epi32(n),
                    _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                )
            }
        }
        #[inline(always)]
        unsafe fn load_masked(self, m: __m256i, p: *const f32) -> __m256 {
            unsafe { _mm256_maskload_ps(p, m) }
        }
        #[inline(always)]
        unsafe fn store_masked(self, m: __m256i, p: *mut f32, v: __m256) {
            unsafe { _mm256_maskstore_ps(p, m, v) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked_round_trip<S: Simd>(s: S, n: usize) -> Vec<f32> {
        let src: Vec<f32> = (0..S::LANES).map(|i| i as f32 + 1.0).collect();
        let mut dst = vec![-1.0f32; S::LANES];
        let m = s.first_lanes(n);
        // SAFETY: both buffers hold LANES values.
        unsafe {
            let v = s.load_masked(m, src.as_ptr());
            s.store_masked(m, dst.as_mut_ptr(), s.add(v, v));
            let z = s.load_masked(m, src.as_ptr());
            dst.push(s.reduce_sum(z));
        }
        dst
    }

    fn masked_scalar(_n: usize) -> Vec<f32> {
        Vec::new()
    }

    #[test]
    fn masked_loads_and_stores_touch_only_their_lanes() {
        for level in crate::isa::test_levels(&[Isa::Avx2, Isa::Avx512], "masked lanes") {
            let lanes = if level >= Isa::Avx512 { 16 } else { 8 };
            for n in 0..=lanes {
                let got =
                    dispatch!(level, masked_round_trip, masked_scalar, (n: usize) -> Vec<f32>);
                let mut want: Vec<f32> = (0..lanes)
                    .map(|i| if i < n { 2.0 * (i as f32 + 1.0) } else { -1.0 })
                    .collect();
                want.push((1..=n).map(|i| i as f32).sum());
                assert_eq!(got, want, "{level:?} n={n}");
            }
        }
    }

    #[test]
    fn isa_cap_is_scoped_and_never_above_the_cpu() {
        let best = features().best_isa();
        assert_eq!(isa(), best);
        with_isa(Isa::Scalar, || assert_eq!(isa(), Isa::Scalar));
        with_isa(Isa::Avx512Vnni, || assert_eq!(isa(), best));
        with_isa(Isa::Avx512, || assert_eq!(isa(), best.min(Isa::Avx512)));
        assert_eq!(isa(), best);
    }
}
