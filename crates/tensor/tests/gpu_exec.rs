//! Exec-level row moves (gather_rows, copy_rows): the GPU backend equals the CPU one bit for
//! bit. The multi-sequence decoder splits and rejoins a step's rows with them.

mod gpu_support;

use gpu_support::gpu_or_skip;
use tensor::exec::{CpuExec, Exec, GpuExec};

fn values(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| ((i as u32).wrapping_mul(2654435761) ^ seed) as f32 / u32::MAX as f32 - 0.5)
        .collect()
}

#[test]
fn gather_and_copy_rows_match_the_cpu() {
    let Some(ctx) = gpu_or_skip() else { return };
    let gpu = GpuExec::new(ctx);
    for (cols, rows, pick, at) in [
        (7, 9, vec![8, 0, 3], 2),
        (64, 5, vec![4], 0),
        (3, 4, vec![1, 2], 2),
    ] {
        let x = values(rows * cols, cols as u32);
        let dst = values(rows * cols, 99);

        let mut cpu_dst = dst.clone();
        let cpu_rows = CpuExec.gather_rows(&x, cols, &pick).unwrap();
        CpuExec
            .copy_rows(&mut cpu_dst, cols, at, &cpu_rows)
            .unwrap();

        let gx = gpu.upload(&x).unwrap();
        let mut gdst = gpu.upload(&dst).unwrap();
        let grows = gpu.gather_rows(&gx, cols, &pick).unwrap();
        gpu.copy_rows(&mut gdst, cols, at, &grows).unwrap();
        assert_eq!(gpu.download(grows).unwrap(), cpu_rows);
        assert_eq!(gpu.download(gdst).unwrap(), cpu_dst);
    }
    // Rows that do not fit are an error on both backends.
    let x = values(6, 1);
    let mut d = values(6, 2);
    assert!(CpuExec.copy_rows(&mut d, 3, 1, &x).is_err());
    let (gx, mut gd) = (gpu.upload(&x).unwrap(), gpu.upload(&d).unwrap());
    assert!(gpu.copy_rows(&mut gd, 3, 1, &gx).is_err());
}
