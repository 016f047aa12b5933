//! Speed at real size: the encoders' GEMMs and attention, the decoders' matvecs per weight
//! type, and Whisper's log-mel, each with its throughput as a fraction of this machine's
//! peak (f32 FMA GFLOP/s or read GB/s, probed in the same run); the table is printed last.
//!
//! Run: `cargo bench -p benches` (about 5 minutes on 2 cores; filter with e.g.
//! `cargo bench -p benches -- matvec`). Without `--bench` (`cargo test -p benches`) every
//! bench runs once at small shapes, as a smoke test.

use criterion::{Criterion, SamplingMode};
use std::hint::black_box;
use std::time::Duration;
use tensor::DType;
use tensor::cpu;
use tensor::cpu::probe::MachinePeaks;
use tensor::exec::{Exec, Projection};
use tensor::ops::attention::{AttnMask, AttnParams, KvData};

use benches::{Group, Recorder, Work, data, weight};

/// Shapes are divided by this in smoke mode.
struct Scale(usize);

impl Scale {
    fn tokens(&self, n: usize) -> usize {
        (n / self.0).max(1)
    }
}

/// Big shapes: few samples of one iteration each (criterion's minimum of 10).
fn heavy(g: &mut Group<'_>) {
    g.inner.sample_size(10);
    g.inner.sampling_mode(SamplingMode::Flat);
    g.inner.warm_up_time(Duration::from_millis(500));
    g.inner.measurement_time(Duration::from_secs(2));
}

/// Short kernels (microseconds): a brief warm-up and a second of samples.
fn light(g: &mut Group<'_>) {
    g.inner.warm_up_time(Duration::from_millis(300));
    g.inner.measurement_time(Duration::from_secs(1));
}

/// `x [n, k] · w [m, k]ᵀ` at the encoders' shapes.
fn gemm(c: &mut Criterion, rec: &Recorder, s: &Scale) {
    // (name, tokens, k, m)
    let shapes = [
        ("siglip_ffn_up", 4096, 1152, 4304),
        ("qwen25vl_ffn_up", 1024, 1280, 3420),
        ("whisper_ffn_up", 1500, 1280, 5120),
        // SmolVLM's 13 tiles in one batch: the attention projections see all 13312 rows, the
        // feed-forward chunks of 1332 (CpuExec::chunk_rows).
        ("smolvlm_q_proj", 13312, 768, 768),
        ("smolvlm_ffn_up", 1332, 768, 3072),
        ("smolvlm_ffn_down", 1332, 3072, 768),
        ("pixtral_qkv", 972, 1024, 1024),
        ("pixtral_ffn_gate", 972, 1024, 4096),
        ("pixtral_ffn_down", 972, 4096, 1024),
    ];
    let mut g = Group::new(c, "gemm");
    heavy(&mut g);
    for (name, n, k, m) in shapes {
        let n = s.tokens(n);
        let x = data(n * k, 2);
        let mut out = vec![0f32; n * m];
        for dtype in [DType::F32, DType::F16, DType::BF16] {
            let w = weight(dtype, m, k);
            let id = format!("{name}_{n}x{k}x{m}_{}", dtype.name());
            let flop = 2.0 * (n * k * m) as f64;
            rec.bench(&mut g, &id, Work::Flop(flop), || {
                cpu::matmul_wide(&w, black_box(&x), n, &mut out).expect("matmul")
            });
        }
    }
    g.finish();
}

/// Non-causal attention over `windows` independent runs of `n` tokens.
fn attention(c: &mut Criterion, rec: &Recorder, s: &Scale) {
    // (name, tokens per window, windows, heads, head dim)
    let shapes = [
        ("siglip", 4096, 1, 16, 72),
        ("whisper", 1500, 1, 20, 64),
        ("qwen25vl_full", 1024, 1, 16, 80),
        ("qwen25vl_window64", 64, 16, 16, 80),
        ("smolvlm_tile", 1024, 1, 12, 64),
        ("pixtral", 972, 1, 16, 64),
    ];
    let mut g = Group::new(c, "attention");
    heavy(&mut g);
    for (name, n, windows, n_head, d) in shapes {
        let n = if windows > 1 { n } else { s.tokens(n) };
        let len = n * n_head * d;
        let (q, k, v) = (data(len, 1), data(len, 2), data(len, 3));
        let pos: Vec<i32> = (0..n as i32).collect();
        let mask = AttnMask::full(&pos, &pos);
        let p = AttnParams::mha(n_head, d);
        let mut out = vec![0f32; len];
        let id = format!("{name}_{windows}x{n}_h{n_head}_d{d}");
        let flop = (windows * 4 * n * n * d * n_head) as f64;
        rec.bench(&mut g, &id, Work::Flop(flop), || {
            for _ in 0..windows {
                cpu::attention(
                    black_box(&q),
                    KvData::F32(&k),
                    KvData::F32(&v),
                    &mask,
                    &p,
                    &mut out,
                );
            }
        });
    }
    g.finish();
}

/// One decode step's attention (one query row per head against an f16 KV cache), per layer:
/// small, so per-call costs (buffers, hand-offs) show next to the arithmetic.
fn decode_attention(c: &mut Criterion, rec: &Recorder, s: &Scale) {
    // (name, heads, KV heads, head dim)
    let shapes = [("gemma3_270m", 4, 1, 256), ("qwen25_0p5b", 14, 2, 64)];
    let mut g = Group::new(c, "decode_attention");
    light(&mut g);
    for (name, n_head, n_kv_head, d) in shapes {
        for n_kv in [128, 1024] {
            let n_kv = s.tokens(n_kv);
            let q = data(n_head * d, 1);
            let to_f16 = |v: Vec<f32>| -> Vec<half::f16> {
                v.into_iter().map(half::f16::from_f32).collect()
            };
            let k = to_f16(data(n_kv * n_kv_head * d, 2));
            let v = to_f16(data(n_kv * n_kv_head * d, 3));
            let q_pos = [n_kv as i32 - 1];
            let k_pos: Vec<i32> = (0..n_kv as i32).collect();
            let mask = AttnMask::causal(&q_pos, &k_pos);
            let p = AttnParams {
                n_kv_head,
                ..AttnParams::mha(n_head, d)
            };
            let mut out = vec![0f32; n_head * d];
            let id = format!("{name}_kv{n_kv}_h{n_head}_kvh{n_kv_head}_d{d}");
            // K and V bytes read.
            let bytes = (2 * n_kv * n_kv_head * d * 2) as f64;
            rec.bench(&mut g, &id, Work::Bytes(bytes), || {
                cpu::attention(
                    black_box(&q),
                    KvData::F16(&k),
                    KvData::F16(&v),
                    &mask,
                    &p,
                    &mut out,
                );
            });
        }
    }
    g.finish();
}

/// One token through a decoder's FFN matrix (`n = 1`): bandwidth-bound, so throughput is
/// bytes of weight read per second.
fn matvec(c: &mut Criterion, rec: &Recorder, s: &Scale) {
    let types = [
        DType::F16,
        DType::Q8_0,
        DType::Q4_0,
        DType::Q5_0,
        DType::Q4K,
        DType::Q5K,
        DType::Q6K,
        DType::IQ4XS,
    ];
    // (name, k, m): Qwen2.5-0.5B and Gemma-3-4B feed-forward down projections (their k is a
    // multiple of the 256-value k-quant blocks; the up projections of 896 are not, and
    // llama.cpp quantizes them with 32-value blocks).
    let shapes = [
        ("qwen25_0p5b_ffn_down", 4864, 896),
        ("gemma3_4b_ffn_down", 10240, 2560),
        // Gemma 3 270M's tied output matrix (Q8_0 in its Q4_K_M file: 640 is no multiple
        // of 256): 178 MB streamed per token, far beyond the caches.
        ("gemma3_270m_output", 640, 262_144),
        // Gemma 3 270M's layer matrices: small enough that a call's fixed costs (hand-off,
        // activation tables, the first cache misses of each task) weigh on a decode step.
        ("gemma3_270m_attn_q", 640, 1024),
        ("gemma3_270m_ffn_up", 640, 2048),
        ("gemma3_270m_attn_output", 1024, 640),
    ];
    let mut g = Group::new(c, "matvec");
    light(&mut g);
    for (name, k, m) in shapes {
        let m = s.tokens(m).next_multiple_of(16);
        let x = data(k, 2);
        let mut out = vec![0f32; m];
        for dtype in types {
            if dtype.block_size() > k || !k.is_multiple_of(dtype.block_size()) {
                continue;
            }
            let w = weight(dtype, m, k);
            let bytes = w.host_bytes().expect("host weight").len() as f64;
            let id = format!("{name}_{k}x{m}_{}", dtype.name());
            rec.bench(&mut g, &id, Work::Bytes(bytes), || {
                cpu::matmul(&w, black_box(&x), 1, &mut out).expect("matmul")
            });
        }
    }
    g.finish();
}

/// The weight matmuls of a decoder layer in one decode step, on enough layers that the
/// weights stream from memory as in a real model (the bench shapes above stay in the
/// last-level cache between iterations): throughput is the layers' weight bytes per second,
/// compared with the read bandwidth. Unlike one big matrix, these include each call's fixed
/// costs (hand-offs, activation tables, the first misses of each task).
/// A weight matrix's (k, m, type).
type Shape = (usize, usize, DType);

fn decode_layers(c: &mut Criterion, rec: &Recorder, s: &Scale) {
    // (name, [(k, m, type)] in call order: q, k, v together, o, gate and up together, down)
    let models: [(&str, [Shape; 7]); 2] = [
        (
            "gemma3_270m",
            [
                (640, 1024, DType::Q5_0),
                (640, 256, DType::Q5_0),
                (640, 256, DType::Q8_0),
                (1024, 640, DType::Q4K),
                (640, 2048, DType::Q5_0),
                (640, 2048, DType::Q5_0),
                (2048, 640, DType::Q6K),
            ],
        ),
        (
            "qwen25_0p5b",
            [
                (896, 896, DType::Q5_0),
                (896, 128, DType::Q5_0),
                (896, 128, DType::Q8_0),
                (896, 896, DType::Q5_0),
                (896, 4864, DType::Q5_0),
                (896, 4864, DType::Q5_0),
                (4864, 896, DType::Q6K),
            ],
        ),
    ];
    // Three times a 32 MiB last-level cache.
    let stream_bytes = (96usize << 20) / s.0;
    let mut g = Group::new(c, "decode_layers");
    light(&mut g);
    for (name, shapes) in models {
        let shapes = shapes.map(|(k, m, t)| (k, s.tokens(m).next_multiple_of(16), t));
        let layer_bytes: usize = shapes
            .iter()
            .map(|&(k, m, t)| m * k / t.block_size() * t.type_size())
            .sum();
        let layers = stream_bytes.div_ceil(layer_bytes);
        let weights = layer_weights(&shapes, layers);
        // Each call's input, made once (its length is the call's k).
        let xs: Vec<Vec<f32>> = shapes.iter().map(|&(k, _, _)| data(k, 3)).collect();
        let mut outs: Vec<Vec<f32>> = shapes.iter().map(|&(_, m, _)| vec![0f32; m]).collect();
        let e = tensor::exec::CpuExec;
        let id = format!("{name}_{layers}_layers");
        rec.bench(
            &mut g,
            &id,
            Work::Bytes((layers * layer_bytes) as f64),
            || {
                for w in weights.chunks_exact(7) {
                    let [q, k, v, o, gate, up, down] = &mut outs[..] else {
                        unreachable!()
                    };
                    let p = |w, out| Projection { w, b: None, out };
                    e.matmul_bias_many(&mut [p(&w[0], q), p(&w[1], k), p(&w[2], v)], &xs[0], 1)
                        .expect("qkv");
                    e.matmul(&w[3], &xs[3], 1, o).expect("o");
                    e.matmul_bias_many(&mut [p(&w[4], gate), p(&w[5], up)], &xs[4], 1)
                        .expect("gate, up");
                    e.matmul(&w[6], &xs[6], 1, down).expect("down");
                }
            },
        );
    }
    g.finish();
}

/// `layers` copies of a layer's weights, read from a file into (huge-page) memory as a model
/// is loaded.
fn layer_weights(shapes: &[Shape], layers: usize) -> Vec<tensor::Tensor> {
    let mut bytes = Vec::new();
    let mut at = Vec::new();
    for _ in 0..layers {
        for &(k, m, t) in shapes {
            let w = weight(t, m, k);
            let b = w.host_bytes().expect("host weight");
            at.push((bytes.len()..bytes.len() + b.len(), t, m, k));
            bytes.extend_from_slice(b);
        }
    }
    let path = std::env::temp_dir().join(format!("mtmd-bench-layers-{}.bin", std::process::id()));
    std::fs::write(&path, &bytes).expect("write the layers' weights");
    let mapped = gguf::MappedBytes::load_file(&path, gguf::LoadMode::Read).expect("read them back");
    let _ = std::fs::remove_file(&path);
    at.into_iter()
        .map(|(range, t, m, k)| {
            let b = mapped.slice(range).expect("in range");
            tensor::Tensor::new(t, &[m, k], tensor::Storage::Mapped(b)).expect("a weight")
        })
        .collect()
}

/// A decode step of several sequences (`n` = 1..16 rows, the server's batch): still
/// bandwidth-bound, so throughput is bytes of weight read per second; the rows-per-call at
/// which it stops being so shows where the row kernels should hand over to the GEMM.
fn matmul_few_rows(c: &mut Criterion, rec: &Recorder, s: &Scale) {
    // (name, k, m, type): Qwen2.5-0.5B's up projection (Q5_0 in its Q4_K_M file) and down
    // projection (Q4_K / Q6_K).
    let cases = [
        ("qwen25_0p5b_ffn_up", 896, 4864, DType::Q5_0),
        ("qwen25_0p5b_ffn_up", 896, 4864, DType::Q8_0),
        ("qwen25_0p5b_ffn_down", 4864, 896, DType::Q4K),
        ("qwen25_0p5b_ffn_down", 4864, 896, DType::Q6K),
    ];
    let mut g = Group::new(c, "matmul_few_rows");
    light(&mut g);
    for (name, k, m, dtype) in cases {
        let m = s.tokens(m).next_multiple_of(16);
        let w = weight(dtype, m, k);
        let bytes = w.host_bytes().expect("host weight").len() as f64;
        for n in [1, 2, 4, 8, 16] {
            let x = data(n * k, 2);
            let mut out = vec![0f32; n * m];
            let id = format!("{name}_{k}x{m}_{}_n{n}", dtype.name());
            rec.bench(&mut g, &id, Work::Bytes(bytes), || {
                cpu::matmul_wide(&w, black_box(&x), n, &mut out).expect("matmul")
            });
        }
    }
    g.finish();
}

/// Whisper's log-mel of one 30 s window (128 bins). FLOP counted as a radix-2 FFT of the
/// 400-sample frame (5·N·log₂N) plus the filterbank product, per frame.
fn log_mel(c: &mut Criterion, rec: &Recorder, s: &Scale) {
    let params = audio::MelParams::whisper(128);
    let seconds = (30 / s.0).max(1);
    let n = seconds * params.sample_rate as usize;
    let pcm = audio::Pcm {
        samples: (0..n).map(|i| (i as f32 * 0.05).sin() * 0.3).collect(),
        sample_rate: params.sample_rate,
    };
    let frames = n / params.hop_length;
    let n_fft = params.n_fft as f64;
    let n_freq = (params.n_fft / 2 + 1) as f64;
    let per_frame = 5.0 * n_fft * n_fft.log2() + 2.0 * n_freq * params.n_mel as f64;
    let mut g = Group::new(c, "log_mel");
    g.inner.sample_size(10);
    g.inner.measurement_time(Duration::from_secs(2));
    let id = format!("whisper_{seconds}s_{}bins", params.n_mel);
    rec.bench(&mut g, &id, Work::Flop(frames as f64 * per_frame), || {
        black_box(audio::log_mel_windows(black_box(&pcm), &params).expect("log-mel"));
    });
    g.finish();
}

fn main() {
    let bench_mode = std::env::args().any(|a| a == "--bench");
    let scale = Scale(if bench_mode { 1 } else { 64 });
    let mut c = Criterion::default().configure_from_args();
    let rec = Recorder::default();
    gemm(&mut c, &rec, &scale);
    attention(&mut c, &rec, &scale);
    decode_attention(&mut c, &rec, &scale);
    matvec(&mut c, &rec, &scale);
    matmul_few_rows(&mut c, &rec, &scale);
    decode_layers(&mut c, &rec, &scale);
    log_mel(&mut c, &rec, &scale);
    c.final_summary();
    let peaks = MachinePeaks::measure(rayon::current_num_threads());
    println!("{}", rec.table(&peaks));
}
