//! `cpu::on_compute_pool`: the value comes back, parallel work inside it is done, callers on
//! several threads at once all finish (its helpers never wait on each other forever), and a
//! panic in the work reaches the caller and leaves the pool usable.

use rayon::prelude::*;
use tensor::cpu::on_compute_pool;

fn parallel_sum(n: u64) -> u64 {
    on_compute_pool(|| (0..n).into_par_iter().map(|v| v * v).sum())
}

#[test]
fn returns_the_work_value() {
    assert_eq!(parallel_sum(1000), (0..1000u64).map(|v| v * v).sum::<u64>());
}

#[test]
fn concurrent_callers_all_finish() {
    let want: u64 = (0..20_000u64).map(|v| v * v).sum();
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..50 {
                    assert_eq!(parallel_sum(20_000), want);
                }
            });
        }
    });
}

#[test]
fn nested_calls_and_panics() {
    assert_eq!(on_compute_pool(|| parallel_sum(10)), parallel_sum(10));
    let caught = std::panic::catch_unwind(|| on_compute_pool(|| panic!("boom")));
    assert!(caught.is_err());
    assert_eq!(parallel_sum(100), (0..100u64).map(|v| v * v).sum::<u64>());
}
