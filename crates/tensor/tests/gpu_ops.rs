//! GPU backend tests: every WGSL file validated with naga (no GPU needed), params mirrors,
//! then every GPU op against the scalar reference of its op on random small shapes, incl.
//! sizes that are not multiples of the workgroup/tile, and the binding-split paths. Matmul,
//! with its many weight formats, has its own binary: gpu_matmul.rs.
//!
//! One device per test binary. Without an adapter each GPU test prints `SKIPPED (no adapter)`,
//! or fails when `MTMD_REQUIRE_GPU=1` (CI) so a skipped suite cannot pass for a tested one.
//! `MTMD_GPU_REPORT=1` prints the NMSE of every comparison.
#![cfg(feature = "gpu")]

use std::path::Path;

use proptest::prelude::*;
use tensor::gpu::{self, ops};
use tensor::ops::rope::{RopeConfig, RopeMode};
use tensor::ops::{act, elementwise, norm, rope, softmax};
use tensor::{DType, Device, Storage, Tensor};

mod gpu_support;
use gpu_support::*;

// ---------------------------------------------------------------------------------------------
// Shaders and params (no GPU needed)

fn parse(name: &str, src: &str) -> naga::Module {
    let module = naga::front::wgsl::parse_str(src)
        .unwrap_or_else(|e| panic!("{name}.wgsl: {}", e.emit_to_string(src)));
    // unpack2x16float needs SHADER_FLOAT16_IN_FLOAT32, which every WebGPU-compliant adapter
    // has (GpuContext checks it); nothing else beyond the defaults may be used.
    let caps =
        naga::valid::Capabilities::default() | naga::valid::Capabilities::SHADER_FLOAT16_IN_FLOAT32;
    naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps)
        .validate(&module)
        .unwrap_or_else(|e| panic!("{name}.wgsl: {}", e.emit_to_string(src)));
    module
}

#[test]
fn every_shader_file_parses_and_validates() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "wgsl") {
            continue;
        }
        let name = path.file_stem().unwrap().to_str().unwrap().to_string();
        let on_disk = std::fs::read_to_string(&path).unwrap();
        let src = if name == "common" {
            assert_eq!(on_disk, gpu::PRELUDE);
            on_disk
        } else {
            let embedded = gpu::SHADERS.iter().find(|(n, _)| *n == name);
            assert!(
                embedded.is_some(),
                "{name}.wgsl is not embedded in gpu::SHADERS"
            );
            gpu::module_source(&name).unwrap()
        };
        parse(&name, &src);
        seen += 1;
    }
    assert_eq!(
        seen,
        gpu::SHADERS.len() + 1,
        "every embedded shader has its file"
    );
}

/// The WGSL struct `name` in `shader` has the size of the Rust mirror and only 4-byte scalar
/// members at consecutive offsets (as the `#[repr(C)]` u32/f32 fields are).
fn assert_mirror(shader: &str, name: &str, rust_size: usize, rust_align: usize) {
    let module = parse(shader, &gpu::module_source(shader).unwrap());
    let (_, ty) = module
        .types
        .iter()
        .find(|(_, t)| t.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("{shader}.wgsl has no struct {name}"));
    let naga::TypeInner::Struct { members, span } = &ty.inner else {
        panic!("{name} is not a struct");
    };
    assert_eq!(*span as usize, rust_size, "{name}: WGSL size vs Rust size");
    assert_eq!(rust_align, 4, "{name}: Rust alignment");
    assert_eq!(
        rust_size % 16,
        0,
        "{name}: uniform structs are padded to 16 bytes"
    );
    for (i, m) in members.iter().enumerate() {
        assert_eq!(m.offset as usize, 4 * i, "{name}.{:?} offset", m.name);
        let inner = &module.types[m.ty].inner;
        assert!(
            matches!(inner, naga::TypeInner::Scalar(s) if s.width == 4),
            "{name}.{:?} is not a 4-byte scalar",
            m.name
        );
    }
}

#[test]
fn params_structs_mirror_their_wgsl() {
    use std::mem::{align_of, size_of};
    assert_mirror(
        "matmul",
        "MatmulParams",
        size_of::<gpu::MatmulParams>(),
        align_of::<gpu::MatmulParams>(),
    );
    assert_mirror(
        "binary",
        "BinaryParams",
        size_of::<gpu::BinaryParams>(),
        align_of::<gpu::BinaryParams>(),
    );
    assert_mirror(
        "unary",
        "UnaryParams",
        size_of::<gpu::UnaryParams>(),
        align_of::<gpu::UnaryParams>(),
    );
    assert_mirror(
        "rms_norm",
        "RmsNormParams",
        size_of::<gpu::RmsNormParams>(),
        align_of::<gpu::RmsNormParams>(),
    );
    assert_mirror(
        "softmax",
        "SoftmaxParams",
        size_of::<gpu::SoftmaxParams>(),
        align_of::<gpu::SoftmaxParams>(),
    );
    assert_mirror(
        "rope",
        "RopeParams",
        size_of::<gpu::RopeParams>(),
        align_of::<gpu::RopeParams>(),
    );
    assert_mirror(
        "attention",
        "AttentionParams",
        size_of::<gpu::AttentionParams>(),
        align_of::<gpu::AttentionParams>(),
    );
    assert_mirror(
        "layer_norm",
        "LayerNormParams",
        size_of::<gpu::LayerNormParams>(),
        align_of::<gpu::LayerNormParams>(),
    );
    assert_mirror(
        "write_rows",
        "WriteRowsParams",
        size_of::<gpu::WriteRowsParams>(),
        align_of::<gpu::WriteRowsParams>(),
    );
    assert_mirror(
        "pointwise",
        "PointwiseParams",
        size_of::<gpu::PointwiseParams>(),
        align_of::<gpu::PointwiseParams>(),
    );
    for shader in ["glu", "geglu"] {
        assert_mirror(
            shader,
            "GluParams",
            size_of::<gpu::GluParams>(),
            align_of::<gpu::GluParams>(),
        );
    }
}

#[test]
fn auto_device_never_panics() {
    let d = Device::auto();
    assert!(!d.name().is_empty());
    assert_eq!(Device::cpu().name(), "cpu");
}

// ---------------------------------------------------------------------------------------------
// Transfers and the pool

#[test]
fn upload_download_round_trip_keeps_bytes_of_every_dtype() {
    let Some(ctx) = gpu_or_skip() else { return };
    // Odd byte counts (one Q4_0 block = 18 bytes) exercise the padded tail.
    for (dtype, shape) in [
        (DType::F32, vec![3, 5]),
        (DType::Q4_0, vec![1, 32]),
        (DType::Q8_0, vec![3, 64]),
    ] {
        let n_bytes = dtype
            .row_bytes(shape.iter().product::<usize>() as u64)
            .unwrap() as usize;
        let raw = bytes(7, n_bytes);
        let t = Tensor::new(
            dtype,
            &shape,
            Storage::Host(tensor::HostBytes::from_bytes(&raw)),
        )
        .unwrap();
        let g = t.to_device(&Device::Gpu(ctx.clone())).unwrap();
        assert_eq!(g.gpu_buffer().unwrap().len_bytes(), n_bytes);
        let back = g.to_host().unwrap();
        assert_eq!(back.host_bytes().unwrap(), raw.as_slice(), "{dtype}");
    }
}

#[test]
fn views_of_gpu_tensors_are_refused_not_misread() {
    let Some(ctx) = gpu_or_skip() else { return };
    let g = on_gpu(&ctx, &[4, 3], &values(1, 12, 1.0));
    let view = g.narrow(0, 1, 2).unwrap();
    assert!(view.to_f32_vec().is_err());
    assert!(ops::silu(&view).is_err());
}

#[test]
fn pool_reuses_released_buffers() {
    let Some(ctx) = gpu_or_skip() else { return };
    let data = values(3, 1000, 1.0);
    let before = ctx.pool_stats().reused;
    for _ in 0..3 {
        let t = on_gpu(&ctx, &[1000], &data);
        drop(t);
    }
    assert!(ctx.pool_stats().reused > before, "{:?}", ctx.pool_stats());
}

// ---------------------------------------------------------------------------------------------
// Ops against their references

type GpuUnary = fn(&Tensor) -> tensor::Result<Tensor>;
type Reference = fn(&mut [f32]);

fn cases() -> ProptestConfig {
    ProptestConfig {
        cases: 12,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(cases())]

    #[test]
    fn add_and_mul_match_reference(rows in 1usize..20, cols in 1usize..256, broadcast: bool, seed: u64) {
        let Some(ctx) = gpu_or_skip() else { return Ok(()) };
        let a = values(seed, rows * cols, 2.0);
        let b_shape = if broadcast { vec![cols] } else { vec![rows, cols] };
        let b = values(seed + 1, b_shape.iter().product(), 2.0);
        let (ga, gb) = (on_gpu(&ctx, &[rows, cols], &a), on_gpu(&ctx, &b_shape, &b));
        let b_full: Vec<f32> = (0..rows * cols).map(|i| b[i % b.len()]).collect();
        let mut want = a.clone();
        elementwise::reference::add(&mut want, &b_full);
        check("add", &host(&ops::add(&ga, &gb).unwrap()), &want);
        let mut want = a.clone();
        elementwise::reference::mul(&mut want, &b_full);
        check("mul", &host(&ops::mul(&ga, &gb).unwrap()), &want);
    }

    #[test]
    fn activations_match_reference(len in 1usize..2000, seed: u64) {
        let Some(ctx) = gpu_or_skip() else { return Ok(()) };
        let x = values(seed, len, 6.0);
        let gx = on_gpu(&ctx, &[len], &x);
        let table: [(&str, GpuUnary, Reference); 4] = [
            ("silu", ops::silu, act::reference::silu),
            ("gelu_tanh", ops::gelu_tanh, act::reference::gelu_tanh),
            ("gelu_erf", ops::gelu_erf, act::reference::gelu_erf),
            ("gelu_quick", ops::gelu_quick, act::reference::gelu_quick),
        ];
        for (name, gpu_op, reference) in table {
            let mut want = x.clone();
            reference(&mut want);
            check(name, &host(&gpu_op(&gx).unwrap()), &want);
        }
    }

    #[test]
    fn rms_norm_matches_reference(rows in 1usize..20, cols in 1usize..256, weighted: bool, seed: u64) {
        let Some(ctx) = gpu_or_skip() else { return Ok(()) };
        let x = values(seed, rows * cols, 3.0);
        let w = values(seed + 1, cols, 1.5);
        let gw = weighted.then(|| on_gpu(&ctx, &[cols], &w));
        let got = host(&ops::rms_norm(&on_gpu(&ctx, &[rows, cols], &x), gw.as_ref(), 1e-5).unwrap());
        let mut want = vec![0f32; rows * cols];
        norm::reference::rms_norm(&x, weighted.then_some(&w[..]), 1e-5, cols, &mut want);
        check("rms_norm", &got, &want);
    }

    #[test]
    fn softmax_matches_reference(heads in 1usize..4, rows in 1usize..12, cols in 1usize..256, masked: bool, seed: u64) {
        let Some(ctx) = gpu_or_skip() else { return Ok(()) };
        let x = values(seed, heads * rows * cols, 4.0);
        let scale = 0.7;
        // Causal-style mask with some -inf, shared by every head; row 0 fully masked when
        // there is more than one row.
        let mask: Vec<f32> = (0..rows * cols)
            .map(|i| {
                let (r, c) = (i / cols, i % cols);
                if (r == 0 && rows > 1) || c > r + cols / 2 { f32::NEG_INFINITY } else { 0.1 * (c % 3) as f32 }
            })
            .collect();
        let gm = masked.then(|| on_gpu(&ctx, &[rows, cols], &mask));
        let got = host(&ops::softmax(&on_gpu(&ctx, &[heads, rows, cols], &x), gm.as_ref(), scale).unwrap());
        let mut want: Vec<f32> = x
            .iter()
            .enumerate()
            .map(|(i, &v)| v * scale + if masked { mask[i % mask.len()] } else { 0.0 })
            .collect();
        softmax::reference(&mut want, cols);
        check("softmax", &got, &want);
    }

    #[test]
    fn rope_matches_reference(tokens in 1usize..12, heads in 1usize..4, half_dim in 1usize..40, mode in 0usize..5, seed: u64) {
        let Some(ctx) = gpu_or_skip() else { return Ok(()) };
        let head_dim = 2 * half_dim;
        let sections = [2, 1, 1, 0];
        let (rope_mode, n_dims) = match mode {
            0 => (RopeMode::Normal, head_dim - 2 * (half_dim / 3)),
            1 => (RopeMode::Neox, head_dim - 2 * (half_dim / 3)),
            2 => (RopeMode::MultiSection { sections }, head_dim),
            3 => (RopeMode::Imrope { sections }, head_dim),
            // Vision rotates whole heads: n_dims = head_dim / 2, which must be even.
            _ => (RopeMode::Vision { sections }, 2 * half_dim.div_ceil(2)),
        };
        let head_dim = if matches!(rope_mode, RopeMode::Vision { .. }) { 2 * n_dims } else { head_dim };
        let mut cfg = RopeConfig::new(rope_mode, n_dims, 10000.0);
        cfg.freq_scale = 0.5;
        cfg.attn_factor = 1.25;
        if seed % 2 == 0 {
            cfg.freq_factors = Some(values(seed, n_dims / 2 + head_dim, 1.0).iter().map(|v| 1.5 + v).collect());
        }
        let n_pos = tokens * cfg.mode.positions_per_token();
        let positions: Vec<i32> = (0..n_pos).map(|i| (i as i32 * 37 + 5) % 500).collect();
        let x = values(seed, tokens * heads * head_dim, 1.0);
        let gx = on_gpu(&ctx, &[tokens, heads, head_dim], &x);
        let got = host(&ops::rope(&gx, &positions, &cfg).unwrap());
        let want = rope::reference(&x, tokens, heads, head_dim, &positions, &cfg);
        check(&format!("rope {:?}", cfg.mode), &got, &want);
    }
}

// ---------------------------------------------------------------------------------------------
// Splitting: tiny binding limits force every op through its multi-chunk path, and big row
// counts through 2-D workgroup grids.

#[test]
fn ops_split_under_a_tiny_binding_limit_match_reference() {
    let Some(full) = gpu_or_skip() else { return };
    let ctx = full.with_binding_limit(1024);
    assert_eq!(ctx.binding_limit(), 1024);
    // (Matmul's split path is tested in gpu_matmul.rs.)
    let (rows, cols) = (29, 50);
    let x = values(5, rows * cols, 2.0);
    let w = values(6, cols, 1.0);
    let gx = on_gpu(&ctx, &[rows, cols], &x);
    let gw = on_gpu(&ctx, &[cols], &w);

    let mut want = x.clone();
    elementwise::reference::add(
        &mut want,
        &(0..rows * cols).map(|i| w[i % cols]).collect::<Vec<_>>(),
    );
    check(
        "add split (broadcast)",
        &host(&ops::add(&gx, &gw).unwrap()),
        &want,
    );
    let mut want = x.clone();
    elementwise::reference::mul(&mut want, &x);
    check(
        "mul split (same shape)",
        &host(&ops::mul(&gx, &gx).unwrap()),
        &want,
    );
    let mut want = x.clone();
    act::reference::silu(&mut want);
    check("silu split", &host(&ops::silu(&gx).unwrap()), &want);
    let mut want = vec![0f32; rows * cols];
    norm::reference::rms_norm(&x, Some(&w), 1e-6, cols, &mut want);
    check(
        "rms_norm split",
        &host(&ops::rms_norm(&gx, Some(&gw), 1e-6).unwrap()),
        &want,
    );
    let mask: Vec<f32> = (0..cols)
        .map(|c| if c % 7 == 0 { f32::NEG_INFINITY } else { 0.0 })
        .collect();
    let gm = on_gpu(&ctx, &[cols], &mask);
    let mut want: Vec<f32> = x
        .iter()
        .enumerate()
        .map(|(i, &v)| v * 0.5 + mask[i % cols])
        .collect();
    softmax::reference(&mut want, cols);
    check(
        "softmax split",
        &host(&ops::softmax(&gx, Some(&gm), 0.5).unwrap()),
        &want,
    );

    let (tokens, heads, head_dim) = (23, 2, 10);
    let xr = values(8, tokens * heads * head_dim, 1.0);
    let positions: Vec<i32> = (0..tokens as i32).collect();
    let cfg = RopeConfig::new(RopeMode::Neox, 8, 10000.0);
    let got = host(
        &ops::rope(
            &on_gpu(&ctx, &[tokens, heads, head_dim], &xr),
            &positions,
            &cfg,
        )
        .unwrap(),
    );
    check(
        "rope split",
        &got,
        &rope::reference(&xr, tokens, heads, head_dim, &positions, &cfg),
    );

    // A row wider than the limit cannot be split: an error, not a panic or a wrong answer.
    let tiny = full.with_binding_limit(64);
    let wide = on_gpu(&tiny, &[2, 40], &values(9, 80, 1.0));
    assert!(ops::rms_norm(&wide, None, 1e-6).is_err());
}

#[test]
fn more_rows_than_one_grid_dimension_holds() {
    let Some(ctx) = gpu_or_skip() else { return };
    // One workgroup per row: 70 000 rows need a 2-D grid (65535 per dimension).
    let (rows, cols) = (70_000, 3);
    let x = values(12, rows * cols, 2.0);
    let gx = on_gpu(&ctx, &[rows, cols], &x);
    let mut want = vec![0f32; rows * cols];
    norm::reference::rms_norm(&x, None, 1e-5, cols, &mut want);
    check(
        "rms_norm 2-D grid",
        &host(&ops::rms_norm(&gx, None, 1e-5).unwrap()),
        &want,
    );
    let mut want = x.clone();
    softmax::reference(&mut want, cols);
    check(
        "softmax 2-D grid",
        &host(&ops::softmax(&gx, None, 1.0).unwrap()),
        &want,
    );
}

#[test]
fn unsupported_inputs_are_errors() {
    let Some(ctx) = gpu_or_skip() else { return };
    assert!(ops::supports(ops::GpuOp::Matmul, DType::Q4_0));
    assert!(!ops::supports(ops::GpuOp::Matmul, DType::IQ2XXS));
    let x = on_gpu(&ctx, &[2, 32], &values(1, 64, 1.0));
    let host_w = Tensor::from_f32(&[3, 32], &values(2, 96, 1.0)).unwrap();
    assert!(ops::matmul(&x, &host_w).is_err(), "host operand");
    let w = on_gpu(&ctx, &[3, 16], &values(2, 48, 1.0));
    assert!(ops::matmul(&x, &w).is_err(), "k mismatch");
    // b would have to broadcast the other way: left to the CPU.
    let small = on_gpu(&ctx, &[32], &values(3, 32, 1.0));
    assert!(ops::add(&small, &x).is_err());
}

/// The backend-neutral ops run on the GPU when their input is there, and keep the result there.
#[test]
fn backend_neutral_ops_dispatch_to_the_gpu() {
    let Some(ctx) = gpu_or_skip() else {
        return;
    };
    let dev = Device::Gpu(ctx);
    let x: Vec<f32> = (0..3 * 70)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
        .collect();
    let w: Vec<f32> = (0..70).map(|i| 1.0 + i as f32 / 100.0).collect();
    let xt = Tensor::from_f32(&[3, 70], &x).unwrap();
    let wt = Tensor::from_f32(&[70], &w).unwrap();
    let cpu = norm::rms_norm(&xt, Some(&wt), 1e-6).unwrap();
    let on_gpu = norm::rms_norm(
        &xt.to_device(&dev).unwrap(),
        Some(&wt.to_device(&dev).unwrap()),
        1e-6,
    )
    .unwrap();
    assert!(
        matches!(on_gpu.storage(), Storage::Gpu(_)),
        "result left the GPU"
    );
    check(
        "ops::rms_norm dispatch",
        &on_gpu.to_f32_vec().unwrap(),
        &cpu.to_f32_vec().unwrap(),
    );
    let cpu = act::silu(&xt).unwrap();
    let on_gpu = act::silu(&xt.to_device(&dev).unwrap()).unwrap();
    assert!(matches!(on_gpu.storage(), Storage::Gpu(_)));
    check(
        "ops::silu dispatch",
        &on_gpu.to_f32_vec().unwrap(),
        &cpu.to_f32_vec().unwrap(),
    );
}
