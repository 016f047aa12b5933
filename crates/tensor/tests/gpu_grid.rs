//! The image and token-grid kernels (`shaders/grid.wgsl`: im2col, grid average pool, unfold
//! and bilinear resize) and Pixtral's 2-D rope against their CPU twins through the `Exec`
//! interface: bit-exact for the gathers and the pool (same sums in the same order), NMSE ≤
//! 1e-6 for the resize and the rope (the GPU may fuse its multiply-adds). Also the host
//! fallback above the binding limit.

mod gpu_support;

use gpu_support::{check, gpu_or_skip, values};
use proptest::prelude::*;
use tensor::cpu::Conv2dParams;
use tensor::exec::{CpuExec, Exec, GpuExec};

fn cases() -> ProptestConfig {
    ProptestConfig {
        cases: 24,
        ..ProptestConfig::default()
    }
}

fn im2col_both(gpu: &GpuExec, x: &[f32], chw: [usize; 3], k: [usize; 2], p: &Conv2dParams) {
    let want = CpuExec.im2col(&x.to_vec(), chw, k, p).unwrap();
    let got = gpu.im2col(&gpu.upload(x).unwrap(), chw, k, p).unwrap();
    assert_eq!(
        gpu.download(got).unwrap(),
        want,
        "im2col {chw:?} {k:?} {p:?}"
    );
}

fn pool_both(gpu: &GpuExec, x: &[f32], hwd: [usize; 3], k: [usize; 2]) {
    let want = CpuExec.pool_avg_grid(&x.to_vec(), hwd, k).unwrap();
    let got = gpu.pool_avg_grid(&gpu.upload(x).unwrap(), hwd, k).unwrap();
    assert_eq!(gpu.download(got).unwrap(), want, "pool {hwd:?} k {k:?}");
}

fn unfold_both(gpu: &GpuExec, x: &[f32], hwd: [usize; 3], k: usize) {
    let want = CpuExec.unfold_grid(&x.to_vec(), hwd, k).unwrap();
    let got = gpu.unfold_grid(&gpu.upload(x).unwrap(), hwd, k).unwrap();
    assert_eq!(gpu.download(got).unwrap(), want, "unfold {hwd:?} k {k}");
}

fn resize_both(gpu: &GpuExec, x: &[f32], hwd: [usize; 3], out: [usize; 2]) {
    let want = CpuExec.resize_bilinear_grid(&x.to_vec(), hwd, out).unwrap();
    let got = gpu
        .resize_bilinear_grid(&gpu.upload(x).unwrap(), hwd, out)
        .unwrap();
    check(
        &format!("resize {hwd:?} -> {out:?}"),
        &gpu.download(got).unwrap(),
        &want,
    );
}

proptest! {
    #![proptest_config(cases())]

    #[test]
    fn im2col_equals_the_cpu(
        c in 1usize..4, h in 1usize..30, w in 1usize..30, kh in 1usize..6, kw in 1usize..6,
        stride in 1usize..4, pad in 0usize..3, dil in 1usize..3, seed: u64,
    ) {
        let Some(ctx) = gpu_or_skip() else { return Ok(()) };
        let p = Conv2dParams { stride: [stride, stride + 1], padding: [pad, pad / 2], dilation: [dil, 1] };
        prop_assume!(p.out_size(h, w, kh, kw).is_some());
        im2col_both(&GpuExec::new(ctx), &values(seed, c * h * w, 2.0), [c, h, w], [kh, kw], &p);
    }

    #[test]
    fn grid_pool_equals_the_cpu(gh in 1usize..9, gw in 1usize..9, d in 1usize..70, kh in 1usize..5, kw in 1usize..5, seed: u64) {
        let Some(ctx) = gpu_or_skip() else { return Ok(()) };
        let (h, w) = (gh * kh, gw * kw);
        pool_both(&GpuExec::new(ctx), &values(seed, h * w * d, 3.0), [h, w, d], [kh, kw]);
    }

    #[test]
    fn transpose_and_f16_rounding_equal_the_cpu(rows in 1usize..70, cols in 1usize..70, seed: u64) {
        let Some(ctx) = gpu_or_skip() else { return Ok(()) };
        let gpu = GpuExec::new(ctx);
        let x = values(seed, rows * cols, 70000.0);
        let want = CpuExec.transpose(&x, rows, cols).unwrap();
        let got = gpu.transpose(&gpu.upload(&x).unwrap(), rows, cols).unwrap();
        prop_assert_eq!(gpu.download(got).unwrap(), want);
        let mut want = x.clone();
        CpuExec.round_f16(&mut want).unwrap();
        let mut got = gpu.upload(&x).unwrap();
        gpu.round_f16(&mut got).unwrap();
        let got = gpu.download(got).unwrap();
        prop_assert_eq!(got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), want.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
    }

    #[test]
    fn grid_unfold_equals_the_cpu(gh in 1usize..7, gw in 1usize..7, d in 1usize..40, k in 1usize..4, seed: u64) {
        let Some(ctx) = gpu_or_skip() else { return Ok(()) };
        let (h, w) = (gh * k, gw * k);
        unfold_both(&GpuExec::new(ctx), &values(seed, h * w * d, 3.0), [h, w, d], k);
    }

    #[test]
    fn rope_2d_through_exec_matches_the_cpu(n in 1usize..30, heads in 1usize..4, quarter in 1usize..12, interleave: bool, seed: u64) {
        let Some(ctx) = gpu_or_skip() else { return Ok(()) };
        let gpu = GpuExec::new(ctx);
        let hd = 4 * quarter;
        let x = values(seed, n * heads * hd, 1.0);
        let rows: Vec<i32> = (0..n as i32).map(|i| i / 5).collect();
        let cols: Vec<i32> = (0..n as i32).map(|i| i % 5).collect();
        let mut want = x.clone();
        CpuExec.rope_2d(&mut want, n, heads, hd, &rows, &cols, 10000.0, interleave).unwrap();
        let mut g = gpu.upload(&x).unwrap();
        gpu.rope_2d(&mut g, n, heads, hd, &rows, &cols, 10000.0, interleave).unwrap();
        check("rope_2d exec", &gpu.download(g).unwrap(), &want);
    }

    #[test]
    fn grid_resize_matches_the_cpu(
        h in 1usize..12, w in 1usize..12, d in 1usize..40, oh in 1usize..20, ow in 1usize..20, seed: u64,
    ) {
        let Some(ctx) = gpu_or_skip() else { return Ok(()) };
        resize_both(&GpuExec::new(ctx), &values(seed, h * w * d, 1.0), [h, w, d], [oh, ow]);
    }
}

/// Real stem shapes: a 14-pixel patch embedding of a 224² image (and a 16-pixel one of
/// 448×336), a 64² SigLIP grid pooled 4×4, Qwen3-VL's 48² position table fitted to 36×20.
#[test]
fn encoder_stem_shapes() {
    let Some(ctx) = gpu_or_skip() else { return };
    let gpu = GpuExec::new(ctx);
    im2col_both(
        &gpu,
        &values(1, 3 * 224 * 224, 1.0),
        [3, 224, 224],
        [14, 14],
        &Conv2dParams::patch(14),
    );
    im2col_both(
        &gpu,
        &values(2, 3 * 336 * 448, 1.0),
        [3, 336, 448],
        [16, 16],
        &Conv2dParams::patch(16),
    );
    pool_both(&gpu, &values(3, 64 * 64 * 72, 1.0), [64, 64, 72], [4, 4]);
    pool_both(&gpu, &values(11, 1500 * 64, 1.0), [1500, 1, 64], [2, 1]);
    unfold_both(&gpu, &values(9, 64 * 48 * 64, 1.0), [64, 48, 64], 2);
    resize_both(&gpu, &values(4, 48 * 48 * 64, 1.0), [48, 48, 64], [36, 20]);
}

/// Above the binding limit the ops run on the host twin and still give the same values.
#[test]
fn over_the_binding_limit_the_host_twin_runs() {
    let Some(full) = gpu_or_skip() else { return };
    let gpu = GpuExec::new(full.with_binding_limit(4096).into());
    im2col_both(
        &gpu,
        &values(5, 3 * 40 * 40, 1.0),
        [3, 40, 40],
        [4, 4],
        &Conv2dParams::patch(4),
    );
    pool_both(&gpu, &values(6, 16 * 16 * 8, 1.0), [16, 16, 8], [2, 2]);
    unfold_both(&gpu, &values(10, 16 * 16 * 8, 1.0), [16, 16, 8], 2);
    resize_both(&gpu, &values(7, 8 * 8 * 32, 1.0), [8, 8, 32], [12, 12]);
}

#[test]
fn bad_shapes_are_errors_on_both_backends() {
    let x = values(8, 30, 1.0);
    assert!(CpuExec.pool_avg_grid(&x, [5, 3, 2], [2, 2]).is_err());
    assert!(CpuExec.transpose(&x, 4, 8).is_err());
    assert!(CpuExec.resize_bilinear_grid(&x, [4, 4, 2], [2, 2]).is_err());
    assert!(CpuExec.unfold_grid(&x, [3, 5, 2], 2).is_err());
    let mut y = x.clone();
    assert!(
        CpuExec
            .rope_2d(&mut y, 5, 1, 6, &[0; 5], &[0; 5], 1e4, true)
            .is_err()
    );
    assert!(
        CpuExec
            .im2col(&x, [1, 5, 6], [7, 1], &Conv2dParams::patch(1))
            .is_err()
    );
    let Some(ctx) = gpu_or_skip() else { return };
    let gpu = GpuExec::new(ctx);
    let g = gpu.upload(&x).unwrap();
    assert!(gpu.pool_avg_grid(&g, [5, 3, 2], [2, 2]).is_err());
    assert!(gpu.transpose(&g, 4, 8).is_err());
    assert!(gpu.resize_bilinear_grid(&g, [4, 4, 2], [2, 2]).is_err());
    assert!(gpu.unfold_grid(&g, [3, 5, 2], 2).is_err());
    assert!(
        gpu.im2col(&g, [1, 5, 6], [7, 1], &Conv2dParams::patch(1))
            .is_err()
    );
}
