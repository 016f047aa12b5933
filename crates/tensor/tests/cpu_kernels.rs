//! Every `tensor::cpu` kernel of "cpu-core" on every instruction-set path this machine has,
//! against the scalar reference of its op, on random shapes with tails: NMSE <= 1e-7.

use half::{bf16, f16};
use proptest::prelude::*;
use tensor::cpu::{self, Isa};
use tensor::ops;
use tensor::{DType, HostBytes, Storage, Tensor};
use testkit::nmse_floored;

const MAX_NMSE: f64 = 1e-7;

/// The paths to check: each one up to what the CPU has (a cap above it is the same path).
fn paths() -> Vec<Isa> {
    let mut paths = vec![Isa::Scalar];
    paths.extend(tensor::isa::test_levels(
        &[Isa::Avx2, Isa::Avx512],
        "float kernel paths",
    ));
    paths
}

fn assert_close(what: &str, path: Isa, got: &[f32], want: &[f32]) {
    let e = nmse_floored_1e6(got, want);
    if std::env::var_os("PRINT_NMSE").is_some() {
        let name = what.split(' ').next().unwrap_or(what);
        eprintln!("NMSE {name} {path:?} {e:e}");
    }
    if e > MAX_NMSE || e.is_nan() {
        let first = got
            .iter()
            .zip(want)
            .position(|(g, w)| (g - w).abs() > 1e-5 * w.abs().max(1.0));
        panic!(
            "{what} on {path:?}: NMSE {e:e} over {} values; first difference at {first:?}: {:?}",
            got.len(),
            first.map(|i| (got[i], want[i]))
        );
    }
}

fn values(len: usize, scale: f32) -> impl Strategy<Value = Vec<f32>> {
    prop::collection::vec(-scale..scale, len)
}

fn tensor_of(dtype: DType, shape: &[usize], bytes: &[u8]) -> Tensor {
    Tensor::new(dtype, shape, Storage::Host(HostBytes::from_bytes(bytes))).unwrap()
}

/// `w` as a tensor of `dtype` and the f32 values that tensor really holds.
fn weight(dtype: DType, m: usize, k: usize, w: &[f32]) -> (Tensor, Vec<f32>) {
    match dtype {
        DType::F32 => (
            tensor_of(dtype, &[m, k], bytemuck::cast_slice(w)),
            w.to_vec(),
        ),
        DType::F16 => {
            let h: Vec<f16> = w.iter().map(|&v| f16::from_f32(v)).collect();
            (
                tensor_of(dtype, &[m, k], bytemuck::cast_slice(&h)),
                h.iter().map(|v| v.to_f32()).collect(),
            )
        }
        DType::BF16 => {
            let h: Vec<bf16> = w.iter().map(|&v| bf16::from_f32(v)).collect();
            (
                tensor_of(dtype, &[m, k], bytemuck::cast_slice(&h)),
                h.iter().map(|v| v.to_f32()).collect(),
            )
        }
        _ => unreachable!(),
    }
}

/// Q8_0 blocks (f16 scale + 32 int8) for a weight of `m x k` (k a multiple of 32), and the
/// f32 values they decode to.
fn q8_0_weight(m: usize, k: usize, seed: u32) -> (Tensor, Vec<f32>) {
    let mut bytes = Vec::new();
    let mut decoded = Vec::new();
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    for _ in 0..m * k / 32 {
        let d = f16::from_f32(0.01 + (state % 100) as f32 * 1e-4);
        bytes.extend_from_slice(&d.to_bits().to_le_bytes());
        for _ in 0..32 {
            state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let q = ((state >> 16) % 255) as i32 - 127;
            bytes.push(q as i8 as u8);
            decoded.push(d.to_f32() * q as f32);
        }
    }
    (tensor_of(DType::Q8_0, &[m, k], &bytes), decoded)
}

fn check_matmul(dtype: DType, n: usize, m: usize, k: usize, w: &[f32], x: &[f32]) {
    let (wt, wf) = weight(dtype, m, k, w);
    let mut want = vec![0f32; n * m];
    ops::matmul::reference(&wf, x, n, k, m, &mut want);
    // `matmul` (row-dot, batch-invariant) and `matmul_wide` (the encoders' packed GEMM).
    type MatmulFn = fn(&tensor::Tensor, &[f32], usize, &mut [f32]) -> tensor::Result<()>;
    let kernels: [(&str, MatmulFn); 2] =
        [("matmul", cpu::matmul), ("matmul_wide", cpu::matmul_wide)];
    for path in paths() {
        for (name, kernel) in kernels {
            let mut got = vec![f32::NAN; n * m];
            cpu::with_isa(path, || kernel(&wt, x, n, &mut got)).unwrap();
            assert_close(
                &format!("{name} {dtype} n={n} m={m} k={k}"),
                path,
                &got,
                &want,
            );
        }
    }
}

type Unary = (&'static str, fn(&mut [f32]), fn(&mut [f32]));
const UNARY: [Unary; 4] = [
    ("silu", cpu::silu, ops::act::reference::silu),
    ("gelu_tanh", cpu::gelu_tanh, ops::act::reference::gelu_tanh),
    ("gelu_erf", cpu::gelu_erf, ops::act::reference::gelu_erf),
    (
        "gelu_quick",
        cpu::gelu_quick,
        ops::act::reference::gelu_quick,
    ),
];

fn check_unary(x: &[f32]) {
    for (name, kernel, reference) in UNARY {
        let mut want = x.to_vec();
        reference(&mut want);
        for path in paths() {
            let mut got = x.to_vec();
            cpu::with_isa(path, || kernel(&mut got));
            assert_close(name, path, &got, &want);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(48), ..ProptestConfig::default() })]

    #[test]
    fn activations_match_reference(x in (0usize..300).prop_flat_map(|n| values(n, 12.0))) {
        check_unary(&x);
    }

    #[test]
    fn gated_match_reference(n in 0usize..300, seed in any::<u32>()) {
        let mut r = seed;
        let mut next = || { r = r.wrapping_mul(1_664_525).wrapping_add(1_013_904_223); (r >> 8) as f32 / (1 << 24) as f32 * 16.0 - 8.0 };
        let gate: Vec<f32> = (0..n).map(|_| next()).collect();
        let up: Vec<f32> = (0..n).map(|_| next()).collect();
        let mut want = vec![0f32; n];
        let mut want_ge = vec![0f32; n];
        ops::act::reference::swiglu(&gate, &up, &mut want);
        ops::act::reference::geglu(&gate, &up, &mut want_ge);
        for path in paths() {
            let mut got = vec![0f32; n];
            cpu::with_isa(path, || cpu::swiglu(&gate, &up, &mut got));
            assert_close("swiglu", path, &got, &want);
            cpu::with_isa(path, || cpu::geglu(&gate, &up, &mut got));
            assert_close("geglu", path, &got, &want_ge);
        }
    }

    #[test]
    fn elementwise_match_reference(
        (rows, cols, a, b) in (1usize..6, 1usize..90).prop_flat_map(|(r, c)| (Just(r), Just(c), values(r * c, 4.0), values(r * c, 4.0))),
        s in -3f32..3.0,
    ) {
        let row = &b[..cols];
        let mut want_add = a.clone();
        ops::elementwise::reference::add(&mut want_add, &b);
        let mut want_mul = a.clone();
        ops::elementwise::reference::mul(&mut want_mul, &b);
        let mut want_scale = a.clone();
        ops::elementwise::reference::scale(&mut want_scale, s);
        let rows_of = |f: fn(&mut [f32], &[f32])| {
            let mut v = a.clone();
            for r in v.chunks_mut(cols) { f(r, row); }
            v
        };
        let want_add_rows = rows_of(ops::elementwise::reference::add);
        let want_mul_rows = rows_of(ops::elementwise::reference::mul);
        for path in paths() {
            let run = |f: &dyn Fn(&mut Vec<f32>)| { let mut v = a.clone(); cpu::with_isa(path, || f(&mut v)); v };
            assert_close("add", path, &run(&|v| cpu::add(v, &b)), &want_add);
            assert_close("mul", path, &run(&|v| cpu::mul(v, &b)), &want_mul);
            assert_close("scale", path, &run(&|v| cpu::scale(v, s)), &want_scale);
            assert_close("add_rows", path, &run(&|v| cpu::add_rows(v, row)), &want_add_rows);
            assert_close("mul_rows", path, &run(&|v| cpu::mul_rows(v, row)), &want_mul_rows);
        }
        prop_assert_eq!(rows, a.len() / cols);
    }

    #[test]
    fn norms_match_reference(
        (cols, x, w, b) in (1usize..300).prop_flat_map(|c| (Just(c), (1usize..5).prop_flat_map(move |r| values(r * c, 10.0)), values(c, 2.0), values(c, 2.0))),
        eps in prop_oneof![Just(1e-6f32), Just(1e-5f32)],
        use_w in any::<bool>(),
        use_b in any::<bool>(),
    ) {
        let w = use_w.then_some(w.as_slice());
        let b = use_b.then_some(b.as_slice());
        let mut want_rms = vec![0f32; x.len()];
        ops::norm::reference::rms_norm(&x, w, eps, cols, &mut want_rms);
        let mut want_ln = vec![0f32; x.len()];
        ops::norm::reference::layer_norm(&x, w, b, eps, cols, &mut want_ln);
        for path in paths() {
            let mut got = vec![0f32; x.len()];
            cpu::with_isa(path, || cpu::rms_norm(&x, w, eps, cols, &mut got));
            assert_close("rms_norm", path, &got, &want_rms);
            cpu::with_isa(path, || cpu::layer_norm(&x, w, b, eps, cols, &mut got));
            assert_close("layer_norm", path, &got, &want_ln);
        }
    }

    #[test]
    fn softmax_matches_reference(
        (cols, mut x) in (1usize..300).prop_flat_map(|c| (Just(c), (1usize..5).prop_flat_map(move |r| values(r * c, 30.0)))),
        masked in prop::collection::vec(any::<bool>(), 0..300),
    ) {
        // Mask some entries to -inf, as attention masks do (whole rows included sometimes).
        for (v, &m) in x.iter_mut().zip(&masked) {
            if m { *v = f32::NEG_INFINITY; }
        }
        let mut want = x.clone();
        ops::softmax::reference(&mut want, cols);
        for path in paths() {
            let mut got = x.clone();
            cpu::with_isa(path, || cpu::softmax_rows(&mut got, cols));
            assert_close("softmax", path, &got, &want);
        }
    }

    #[test]
    fn matmul_matches_reference(
        (n, m, k, w, x) in (1usize..20, 1usize..70, 1usize..300)
            .prop_flat_map(|(n, m, k)| (Just(n), Just(m), Just(k), values(m * k, 1.0), values(n * k, 1.0))),
        dtype in prop_oneof![Just(DType::F32), Just(DType::F16), Just(DType::BF16)],
    ) {
        check_matmul(dtype, n, m, k, &w, &x);
    }

    #[test]
    fn get_rows_matches_reference(
        (rows, cols, table) in (1usize..20, 1usize..100).prop_flat_map(|(r, c)| (Just(r), Just(c), values(r * c, 3.0))),
        ids in prop::collection::vec(0u32..1000, 0..12),
        dtype in prop_oneof![Just(DType::F32), Just(DType::F16), Just(DType::BF16)],
    ) {
        let ids: Vec<u32> = ids.iter().map(|&i| i % rows as u32).collect();
        let (t, tf) = weight(dtype, rows, cols, &table);
        let mut want = vec![0f32; ids.len() * cols];
        ops::get_rows::reference(&tf, cols, &ids, &mut want);
        let mut got = vec![f32::NAN; ids.len() * cols];
        cpu::get_rows(&t, &ids, &mut got).unwrap();
        prop_assert_eq!(got, want);
    }
}

/// Sizes past the thresholds where kernels split work across threads.
#[test]
fn large_inputs_take_the_parallel_paths() {
    let n = 200_003;
    let x: Vec<f32> = (0..n)
        .map(|i| ((i * 7919) % 2001) as f32 / 100.0 - 10.0)
        .collect();
    check_unary(&x);
    let cols = 1001;
    let rows = n / cols;
    let xs = &x[..rows * cols];
    let w: Vec<f32> = (0..cols).map(|i| 1.0 + i as f32 / cols as f32).collect();
    let mut want = vec![0f32; xs.len()];
    ops::norm::reference::rms_norm(xs, Some(&w), 1e-6, cols, &mut want);
    let mut got = vec![0f32; xs.len()];
    cpu::rms_norm(xs, Some(&w), 1e-6, cols, &mut got);
    assert_close("rms_norm (parallel)", cpu::isa(), &got, &want);
    let mut want = xs.to_vec();
    ops::softmax::reference(&mut want, cols);
    let mut got = xs.to_vec();
    cpu::softmax_rows(&mut got, cols);
    assert_close("softmax (parallel)", cpu::isa(), &got, &want);
}

/// GEMM shapes with several k slices, column blocks and row blocks (and several cache blocks
/// of rows and of k in one task), odd everywhere.
#[test]
fn matmul_blocked_shapes() {
    for &(n, m, k) in &[
        (37, 301, 517),
        (5, 1000, 130),
        (130, 70, 64),
        (9, 33, 1),
        (900, 70, 700),
    ] {
        let w: Vec<f32> = (0..m * k)
            .map(|i| ((i * 31) % 199) as f32 / 199.0 - 0.5)
            .collect();
        let x: Vec<f32> = (0..n * k)
            .map(|i| ((i * 17) % 97) as f32 / 97.0 - 0.5)
            .collect();
        for dtype in [DType::F32, DType::F16, DType::BF16] {
            check_matmul(dtype, n, m, k, &w, &x);
        }
    }
    // Decode shape: one row, many weight rows (parallel dot path).
    let (m, k) = (3000, 300);
    let w: Vec<f32> = (0..m * k)
        .map(|i| ((i * 13) % 101) as f32 / 101.0 - 0.5)
        .collect();
    let x: Vec<f32> = (0..k).map(|i| i as f32 / k as f32).collect();
    check_matmul(DType::F16, 1, m, k, &w, &x);
    check_matmul(DType::F32, 3, m, k, &w, &[x.clone(), x.clone(), x].concat());
}

#[test]
fn matmul_quantized_weights_match_dequantized_reference() {
    let (n, m, k) = (6, 40, 96);
    let (w, wf) = q8_0_weight(m, k, 7);
    let x: Vec<f32> = (0..n * k)
        .map(|i| ((i * 17) % 97) as f32 / 97.0 - 0.5)
        .collect();
    let mut want = vec![0f32; n * m];
    ops::matmul::reference(&wf, &x, n, k, m, &mut want);
    let mut got = vec![0f32; n * m];
    cpu::matmul(&w, &x, n, &mut got).unwrap();
    // Integer dot products quantize x to 8 bits: looser bound than the float paths.
    let e = nmse_floored_1e6(&got, &want);
    assert!(e < 1e-4, "Q8_0 matmul NMSE {e:e}");
    let mut rows = vec![0f32; 2 * k];
    cpu::get_rows(&w, &[3, 0], &mut rows).unwrap();
    assert_eq!(rows[..k], wf[3 * k..4 * k]);
    assert_eq!(rows[k..], wf[..k]);
}

#[test]
fn shape_errors_are_reported() {
    let (w, _) = weight(DType::F32, 4, 8, &[0.5; 32]);
    let mut out = vec![0f32; 4];
    assert!(cpu::matmul(&w, &[0.0; 7], 1, &mut out).is_err());
    assert!(cpu::matmul(&w, &[0.0; 8], 1, &mut out[..3]).is_err());
    assert!(cpu::get_rows(&w, &[4], &mut [0.0; 8]).is_err());
    assert!(cpu::get_rows(&w, &[1], &mut [0.0; 7]).is_err());
}

/// NMSE with the signal floored at 1e-6 per value: outputs all near zero (e.g. gelu of one very
/// negative input, ~1e-16) carry no signal and are held to an absolute error of about 3e-7.
fn nmse_floored_1e6(got: &[f32], want: &[f32]) -> f64 {
    nmse_floored(got, want, 1e-6)
}
