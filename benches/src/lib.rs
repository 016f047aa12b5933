//! Shared pieces of the speed benches: deterministic inputs, weight tensors of any dtype, and
//! a recorder that keeps criterion's per-iteration times so the run can end with a table of
//! throughput as a fraction of this machine's peaks (measured by `tensor::cpu::probe`).

use std::cell::RefCell;
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Throughput};
use tensor::cpu::probe::MachinePeaks;
use tensor::{DType, HostBytes, Storage, Tensor};

/// Values in [-0.5, 0.5), deterministic.
pub fn data(len: usize, seed: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ((i.wrapping_mul(7919) + seed) % 1999) as f32 / 1999.0 - 0.5)
        .collect()
}

/// A `[m, k]` weight of `dtype`: floats converted from [`data`], quantized formats as random
/// blocks whose f16 scales are set small and finite (the kernels' speed does not depend on
/// the values; NaN or huge scales would only make the outputs odd).
pub fn weight(dtype: DType, m: usize, k: usize) -> Tensor {
    let bytes: Vec<u8> = match dtype {
        DType::F32 => bytemuck::cast_slice(&data(m * k, 1)).to_vec(),
        DType::F16 => data(m * k, 1)
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
            .collect(),
        DType::BF16 => data(m * k, 1)
            .iter()
            .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
            .collect(),
        _ => random_blocks(dtype, m * k),
    };
    Tensor::new(dtype, &[m, k], Storage::Host(HostBytes::from_bytes(&bytes)))
        .expect("a weight of a valid shape")
}

fn random_blocks(dtype: DType, n: usize) -> Vec<u8> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let size = dtype.type_size();
    let mut bytes: Vec<u8> = (0..n / dtype.block_size() * size)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    // Where each format keeps its f16 super-block scale(s).
    let scale_at: &[usize] = match dtype {
        DType::Q4K | DType::Q5K => &[0, 2],
        DType::Q6K => &[208],
        _ => &[0],
    };
    let small = half::f16::from_f32(0.01).to_le_bytes();
    for block in bytes.chunks_exact_mut(size) {
        for &off in scale_at {
            block[off..off + 2].copy_from_slice(&small);
        }
    }
    bytes
}

/// What one iteration of a bench does, for its throughput.
#[derive(Clone, Copy, Debug)]
pub enum Work {
    /// Floating-point operations (a multiply-add is 2); compared with the f32 FMA peak.
    Flop(f64),
    /// Bytes read from memory; compared with the read bandwidth.
    Bytes(f64),
}

struct Record {
    name: String,
    work: Work,
    /// Seconds per iteration, one entry per criterion sample.
    secs: Vec<f64>,
}

/// Runs benches through criterion and keeps their times for the closing table.
#[derive(Default)]
pub struct Recorder {
    records: RefCell<Vec<Record>>,
}

impl Recorder {
    /// Benchmarks `f` as `id` in `group`, reporting `work` per iteration as criterion's
    /// throughput too.
    pub fn bench(&self, group: &mut Group<'_>, id: &str, work: Work, mut f: impl FnMut() + Send) {
        let name = format!("{}/{id}", group.name);
        let group = &mut group.inner;
        let index = {
            let mut r = self.records.borrow_mut();
            r.push(Record {
                name,
                work,
                secs: Vec::new(),
            });
            r.len() - 1
        };
        group.throughput(match work {
            Work::Flop(f) => Throughput::Elements(f as u64),
            Work::Bytes(b) => Throughput::Bytes(b as u64),
        });
        group.bench_function(id, |b| {
            b.iter_custom(|iters| {
                // On a pool thread whose helpers spin between calls, as a decode step runs
                // (`cpu::on_compute_pool`): short calls then measure the kernel, not the
                // wake-up of sleeping workers.
                let elapsed = tensor::cpu::on_compute_pool(|| {
                    let t0 = Instant::now();
                    for _ in 0..iters {
                        f();
                    }
                    t0.elapsed()
                });
                let per = elapsed.as_secs_f64() / iters.max(1) as f64;
                self.records.borrow_mut()[index].secs.push(per);
                elapsed
            })
        });
    }

    /// The closing table: median time, throughput and its fraction of the peak.
    pub fn table(&self, peaks: &MachinePeaks) -> String {
        let mut out = format!("\n{peaks}\n\n");
        out += &format!(
            "| {:<52} | {:>10} | {:>16} | {:>7} |\n|{:-<54}|{:->12}|{:->18}|{:->9}|\n",
            "bench", "median", "throughput", "of peak", "", "", "", ""
        );
        for r in self.records.borrow().iter() {
            let Some(secs) = median(&r.secs) else {
                continue;
            };
            let (rate, unit, peak) = match r.work {
                Work::Flop(f) => (f / secs / 1e9, "GFLOP/s", peaks.fma_gflops),
                Work::Bytes(b) => (b / secs / 1e9, "GB/s", peaks.read_gbps),
            };
            out += &format!(
                "| {:<52} | {:>10} | {:>8.1} {:<7} | {:>6.0}% |\n",
                r.name,
                format!("{:.3?}", Duration::from_secs_f64(secs)),
                rate,
                unit,
                100.0 * rate / peak
            );
        }
        out
    }
}

fn median(v: &[f64]) -> Option<f64> {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    s.get(s.len() / 2).copied()
}

/// A criterion group with its name (criterion does not give it back).
pub struct Group<'c> {
    pub name: String,
    pub inner: BenchmarkGroup<'c, WallTime>,
}

impl<'c> Group<'c> {
    pub fn new(c: &'c mut criterion::Criterion, name: &str) -> Self {
        Self {
            name: name.to_owned(),
            inner: c.benchmark_group(name),
        }
    }

    pub fn finish(self) {
        self.inner.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_of_every_bench_type_build() {
        for t in [
            DType::F32,
            DType::F16,
            DType::BF16,
            DType::Q8_0,
            DType::Q4_0,
            DType::Q4K,
            DType::Q5K,
            DType::Q6K,
            DType::IQ4XS,
        ] {
            let w = weight(t, 4, 256);
            let mut out = vec![0f32; 4];
            tensor::cpu::matmul(&w, &data(256, 2), 1, &mut out).unwrap();
            assert!(out.iter().all(|v| v.is_finite()), "{t:?}");
        }
    }
}
