//! Machine-peak probes: what this CPU can do at best, measured in a few tens of milliseconds,
//! so benchmarks can print "fraction of peak" next to their throughput instead of bare numbers
//! that mean little on another machine.
//!
//! - [`fma_peak_gflops`]: f32 fused multiply-adds with enough independent accumulators to keep
//!   both FMA ports busy (AVX-512 when present, else AVX2+FMA, else scalar).
//! - [`bf16_peak_gflops`]: AVX512-BF16 `vdpbf16ps` (`None` without it).
//! - [`read_bandwidth_gbps`]: streaming SIMD reads over a buffer far larger than the caches.
//!
//! Every probe runs `threads` OS threads of its own (not rayon's pool, whose size is not
//! ours to pick) that start together behind a barrier. Compute probes sum each thread's best
//! 10 ms window; the bandwidth probe takes the best of three passes, all threads together.
#![allow(unsafe_code)]

use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration, Instant};

/// The three peaks of this machine at one thread count.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MachinePeaks {
    pub threads: usize,
    /// f32 FMA GFLOP/s (one FMA = 2 FLOP).
    pub fma_gflops: f64,
    /// bf16 dot-product GFLOP/s (`None`: no AVX512-BF16).
    pub bf16_gflops: Option<f64>,
    /// Streaming read bandwidth from memory, GB/s (10⁹ bytes).
    pub read_gbps: f64,
}

impl MachinePeaks {
    /// Runs every probe (about half a second in all, most of it touching the bandwidth
    /// buffer).
    pub fn measure(threads: usize) -> Self {
        Self {
            threads: threads.max(1),
            fma_gflops: fma_peak_gflops(threads),
            bf16_gflops: bf16_peak_gflops(threads),
            read_gbps: read_bandwidth_gbps(threads),
        }
    }
}

impl std::fmt::Display for MachinePeaks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "machine peak ({} thread{}): f32 FMA {:.1} GFLOP/s, bf16 dot {}, read bandwidth {:.1} GB/s",
            self.threads,
            if self.threads == 1 { "" } else { "s" },
            self.fma_gflops,
            match self.bf16_gflops {
                Some(g) => format!("{g:.1} GFLOP/s"),
                None => "n/a".into(),
            },
            self.read_gbps
        )
    }
}

/// How long each compute probe runs after its warm-up (long enough for a stable clock, short
/// enough that the three probes stay well under a second).
const COMPUTE_TIME: Duration = Duration::from_millis(60);
/// Warm-up before timing: wide vector units power up and the clock settles.
const WARMUP_TIME: Duration = Duration::from_millis(15);
/// Bandwidth buffer: far beyond the L2 of any core; beyond most L3s too (the best of several
/// passes is taken, so a cache that still holds part of it can only inflate the figure a bit).
const READ_BYTES: usize = 512 << 20;

/// Runs `work` on `threads` threads started together; each returns its rate (FLOP/ns). The
/// sum of the rates, i.e. GFLOP/s.
fn run_threads(threads: usize, work: impl Fn() -> f64 + Sync) -> f64 {
    let threads = threads.max(1);
    let barrier = Barrier::new(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    work()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or(0.0)).sum()
    })
}

/// The best rate (work/ns) of `chunk()` (returning its work) over windows of `WINDOW` during
/// `time`: on a shared machine the best window is the closest to what the hardware can do.
fn best_rate(time: Duration, mut chunk: impl FnMut() -> f64) -> f64 {
    const WINDOW: Duration = Duration::from_millis(10);
    let t0 = Instant::now();
    let mut best = 0.0f64;
    while t0.elapsed() < time {
        let w0 = Instant::now();
        let mut done = 0.0;
        while w0.elapsed() < WINDOW {
            done += chunk();
        }
        best = best.max(done / w0.elapsed().as_nanos().max(1) as f64);
    }
    best
}

/// Iterations of a compute kernel between clock reads (a few microseconds of work).
const CHUNK_ITERS: usize = 4096;

/// Peak f32 FMA throughput on `threads` threads, in GFLOP/s.
pub fn fma_peak_gflops(threads: usize) -> f64 {
    let isa = super::isa();
    run_threads(threads, || {
        let chunk = || fma_chunk(isa, CHUNK_ITERS);
        best_rate(WARMUP_TIME, chunk);
        best_rate(COMPUTE_TIME, chunk)
    })
}

/// Peak bf16 dot-product throughput (`vdpbf16ps`, 2 multiply-adds per f32 lane) on `threads`
/// threads, in GFLOP/s; `None` when the CPU lacks AVX512-BF16.
pub fn bf16_peak_gflops(threads: usize) -> Option<f64> {
    let f = super::features();
    if !(f.avx512bf16 && f.avx512f) {
        return None;
    }
    Some(run_threads(threads, || {
        let chunk = || bf16_chunk(CHUNK_ITERS);
        best_rate(WARMUP_TIME, chunk);
        best_rate(COMPUTE_TIME, chunk)
    }))
}

/// Streaming read bandwidth on `threads` threads, in GB/s: each thread sums its share of a
/// 512 MiB buffer it filled itself; the best of three passes.
pub fn read_bandwidth_gbps(threads: usize) -> f64 {
    let threads = threads.max(1);
    let per_thread = READ_BYTES / 4 / threads;
    let isa = super::isa();
    // Each thread's share is filled by that thread, so the pages live next to it (NUMA).
    let barrier = Barrier::new(threads);
    let fill_and_read = || {
        let buf: Vec<f32> = (0..per_thread).map(|i| (i & 1023) as f32).collect();
        let mut best = Duration::MAX;
        for _ in 0..3 {
            barrier.wait();
            let t0 = Instant::now();
            black_box(sum(isa, black_box(&buf)));
            let t = t0.elapsed();
            best = best.min(t);
            // The pass ends for everyone together so the next one starts together.
            barrier.wait();
        }
        best
    };
    let slowest = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads).map(|_| s.spawn(fill_and_read)).collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(Duration::MAX))
            .max()
            .unwrap_or(Duration::MAX)
    });
    (per_thread * 4 * threads) as f64 / slowest.as_nanos().max(1) as f64
}

/// `iters` rounds of independent FMAs on the widest units `isa` allows; FLOP done.
fn fma_chunk(isa: super::Isa, iters: usize) -> f64 {
    #[cfg(target_arch = "x86_64")]
    {
        use super::Isa;
        match isa {
            // SAFETY: `isa()` reports a level only when the CPU has its features.
            Isa::Avx512 | Isa::Avx512Vnni => unsafe { x86::fma_avx512(iters) },
            Isa::Avx2 => unsafe { x86::fma_avx2(iters) },
            Isa::Scalar => fma_scalar(iters),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = isa;
        fma_scalar(iters)
    }
}

fn bf16_chunk(iters: usize) -> f64 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: only called by `bf16_peak_gflops` after checking AVX512-F and AVX512-BF16.
        unsafe { x86::dpbf16_avx512(iters) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = iters;
        0.0
    }
}

fn sum(isa: super::Isa, buf: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        use super::Isa;
        match isa {
            // SAFETY: as in `fma_chunk`.
            Isa::Avx512 | Isa::Avx512Vnni => unsafe { x86::sum_avx512(buf) },
            Isa::Avx2 => unsafe { x86::sum_avx2(buf) },
            Isa::Scalar => buf.iter().sum(),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = isa;
        buf.iter().sum()
    }
}

/// Eight independent chains of scalar multiply-adds (machines without AVX2).
fn fma_scalar(iters: usize) -> f64 {
    let (a, b) = (black_box(0.999_999_9f32), black_box(1e-7f32));
    let mut acc = [black_box(1.0f32); 8];
    for _ in 0..iters {
        for v in &mut acc {
            *v = v.mul_add(a, b);
        }
    }
    black_box(acc);
    (iters * 8 * 2) as f64
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;
    use std::hint::black_box;

    /// Independent accumulators: FMA latency (4 cycles) × 2 ports = 8 in flight at least;
    /// 12 leaves slack and fits the 32 zmm registers with the two operands.
    const ACC_512: usize = 12;
    /// 10 + 2 operands stay within the 16 ymm registers of AVX2.
    const ACC_256: usize = 10;

    #[target_feature(enable = "avx512f")]
    pub fn fma_avx512(iters: usize) -> f64 {
        let a = _mm512_set1_ps(black_box(0.999_999_9));
        let b = _mm512_set1_ps(black_box(1e-7));
        let mut acc = [_mm512_set1_ps(black_box(1.0)); ACC_512];
        for _ in 0..iters {
            for v in &mut acc {
                *v = _mm512_fmadd_ps(*v, a, b);
            }
        }
        black_box(acc);
        (iters * ACC_512 * 16 * 2) as f64
    }

    #[target_feature(enable = "avx2,fma")]
    pub fn fma_avx2(iters: usize) -> f64 {
        let a = _mm256_set1_ps(black_box(0.999_999_9));
        let b = _mm256_set1_ps(black_box(1e-7));
        let mut acc = [_mm256_set1_ps(black_box(1.0)); ACC_256];
        for _ in 0..iters {
            for v in &mut acc {
                *v = _mm256_fmadd_ps(*v, a, b);
            }
        }
        black_box(acc);
        (iters * ACC_256 * 8 * 2) as f64
    }

    /// `vdpbf16ps`: per f32 lane, two bf16 products added to the accumulator (4 FLOP).
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub fn dpbf16_avx512(iters: usize) -> f64 {
        // Tiny products, so the accumulators never overflow.
        let small = _mm512_set1_ps(black_box(1e-3));
        let a = _mm512_cvtne2ps_pbh(small, small);
        let mut acc = [_mm512_set1_ps(black_box(0.0)); ACC_512];
        for _ in 0..iters {
            for v in &mut acc {
                *v = _mm512_dpbf16_ps(*v, a, a);
            }
        }
        black_box(acc);
        (iters * ACC_512 * 16 * 4) as f64
    }

    /// Sum with 8 independent accumulators (memory-bound: the adds only keep the loads alive).
    #[target_feature(enable = "avx512f")]
    pub fn sum_avx512(buf: &[f32]) -> f32 {
        let mut acc = [_mm512_setzero_ps(); 8];
        let mut blocks = buf.chunks_exact(128);
        for block in &mut blocks {
            for (j, v) in acc.iter_mut().enumerate() {
                // SAFETY: `block` holds 128 floats; lane group j reads 16 of them.
                let x = unsafe { _mm512_loadu_ps(block.as_ptr().add(j * 16)) };
                *v = _mm512_add_ps(*v, x);
            }
        }
        let mut total = 0.0;
        for v in acc {
            total += _mm512_reduce_add_ps(v);
        }
        total + blocks.remainder().iter().sum::<f32>()
    }

    #[target_feature(enable = "avx2")]
    pub fn sum_avx2(buf: &[f32]) -> f32 {
        let mut acc = [_mm256_setzero_ps(); 8];
        let mut blocks = buf.chunks_exact(64);
        for block in &mut blocks {
            for (j, v) in acc.iter_mut().enumerate() {
                // SAFETY: `block` holds 64 floats; lane group j reads 8 of them.
                let x = unsafe { _mm256_loadu_ps(block.as_ptr().add(j * 8)) };
                *v = _mm256_add_ps(*v, x);
            }
        }
        let mut lanes = [0f32; 8];
        let mut total = 0.0;
        for v in acc {
            // SAFETY: `lanes` holds 8 floats.
            unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), v) };
            total += lanes.iter().sum::<f32>();
        }
        total + blocks.remainder().iter().sum::<f32>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Timing is not asserted (shared machines), only that each probe measures something
    // plausible: positive, finite, and below any CPU's reach per thread.
    fn plausible(v: f64, per_thread_cap: f64, threads: usize) {
        eprintln!("probe: {v:.1} on {threads} thread(s)");
        assert!(v.is_finite() && v > 0.0, "{v}");
        assert!(v < per_thread_cap * threads as f64, "{v}");
    }

    #[test]
    fn fma_peak_is_sane() {
        for t in [1, 2] {
            plausible(fma_peak_gflops(t), 2_000.0, t);
        }
        // The AVX2 path too, on machines that also have AVX-512.
        if crate::cpu::features().best_isa() >= crate::cpu::Isa::Avx2 {
            let avx2 = run_threads(1, || {
                best_rate(COMPUTE_TIME, || {
                    fma_chunk(crate::cpu::Isa::Avx2, CHUNK_ITERS)
                })
            });
            plausible(avx2, 2_000.0, 1);
        }
    }

    #[test]
    fn bf16_peak_follows_the_feature() {
        let f = crate::cpu::features();
        match bf16_peak_gflops(1) {
            Some(g) => {
                assert!(f.avx512bf16);
                plausible(g, 4_000.0, 1);
            }
            None => assert!(!f.avx512bf16 || !f.avx512f),
        }
    }

    #[test]
    fn read_bandwidth_is_sane() {
        plausible(read_bandwidth_gbps(1), 1_000.0, 1);
    }

    #[test]
    fn scalar_paths_count_their_work() {
        assert_eq!(fma_scalar(10), 160.0);
        assert_eq!(sum(crate::cpu::Isa::Scalar, &[1.0, 2.0, 3.0]), 6.0);
        let v: Vec<f32> = (0..1000).map(|i| (i % 7) as f32).collect();
        let want: f32 = v.iter().sum();
        assert_eq!(sum(crate::cpu::isa(), &v), want);
    }
}
