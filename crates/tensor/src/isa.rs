//! The instruction-set levels of the CPU kernels, detected once per process, and the test
//! switch that turns a skipped level into a failure.
//!
//! One [`Isa`] serves every kernel family: the float kernels of `cpu` run their AVX-512 path on
//! [`Isa::Avx512`] and above, the integer dot products of `quant::dot` need
//! [`Isa::Avx512Vnni`] for their `dpbusd` kernels and packed GEMM (a plain AVX-512 level runs
//! their AVX2 kernels).

use std::sync::OnceLock;

/// The x86 features the kernels care about, detected once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuFeatures {
    pub avx512f: bool,
    pub avx512bw: bool,
    pub avx512vl: bool,
    pub avx512vnni: bool,
    pub avx512bf16: bool,
    pub avx2: bool,
    pub fma: bool,
    pub f16c: bool,
}

impl CpuFeatures {
    fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            Self {
                avx512f: is_x86_feature_detected!("avx512f"),
                avx512bw: is_x86_feature_detected!("avx512bw"),
                avx512vl: is_x86_feature_detected!("avx512vl"),
                avx512vnni: is_x86_feature_detected!("avx512vnni"),
                avx512bf16: is_x86_feature_detected!("avx512bf16"),
                avx2: is_x86_feature_detected!("avx2"),
                fma: is_x86_feature_detected!("fma"),
                f16c: is_x86_feature_detected!("f16c"),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        Self::default()
    }

    /// The highest level whose features are all present.
    pub fn best_isa(&self) -> Isa {
        let avx2 = self.avx2 && self.fma && self.f16c;
        let avx512 = avx2 && self.avx512f && self.avx512bw && self.avx512vl;
        if avx512 && self.avx512vnni {
            Isa::Avx512Vnni
        } else if avx512 {
            Isa::Avx512
        } else if avx2 {
            Isa::Avx2
        } else {
            Isa::Scalar
        }
    }
}

/// The CPU features of this machine, detected on first use.
pub fn features() -> &'static CpuFeatures {
    static FEATURES: OnceLock<CpuFeatures> = OnceLock::new();
    FEATURES.get_or_init(CpuFeatures::detect)
}

/// An instruction-set level. Ordered: each level includes the ones below it, and a request
/// above what the CPU has is capped (float kernels) or refused (`quant::dot::*_with`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    /// Plain Rust: the scalar references (the numeric contracts).
    Scalar,
    /// AVX2 + FMA + F16C: 8 f32 lanes; `maddubs` / `madd` integer dot products.
    Avx2,
    /// AVX-512 F/BW/VL (+ AVX2, FMA, F16C): 16 f32 lanes.
    Avx512,
    /// AVX-512 with VNNI (`dpbusd` / `dpwssd`): the packed quantized GEMM.
    Avx512Vnni,
}

impl Isa {
    /// Every level, lowest first.
    pub const ALL: [Isa; 4] = [Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Avx512Vnni];

    /// The best level this CPU supports, detected once.
    pub fn detected() -> Isa {
        static DETECTED: OnceLock<Isa> = OnceLock::new();
        *DETECTED.get_or_init(|| features().best_isa())
    }

    /// Every level this CPU can run, lowest first (always starts with `Scalar`).
    pub fn available() -> Vec<Isa> {
        Self::ALL
            .into_iter()
            .filter(|&l| l <= Self::detected())
            .collect()
    }

    /// Whether this CPU can run the kernels of this level.
    pub fn is_available(self) -> bool {
        self <= Self::detected()
    }

    /// The name `MTMD_REQUIRE_ISA` uses for this level.
    pub fn env_name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Avx512Vnni => "avx512vnni",
        }
    }
}

/// The levels `MTMD_REQUIRE_ISA` requires: a comma list of [`Isa::env_name`]s, or `all` for
/// every level the CPU reports (checked against the raw feature bits, not through
/// [`Isa::detected`], so a detection bug cannot excuse itself). Unset or empty: none.
/// Panics on an unknown name (a typo must not silently require nothing).
pub fn required_isas() -> Vec<Isa> {
    let Ok(spec) = std::env::var("MTMD_REQUIRE_ISA") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for name in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if name.eq_ignore_ascii_case("all") {
            out.extend(Isa::ALL.into_iter().filter(|&l| raw_cpu_has(l)));
            continue;
        }
        let level = Isa::ALL
            .into_iter()
            .find(|l| l.env_name().eq_ignore_ascii_case(name))
            .unwrap_or_else(|| {
                panic!(
                    "MTMD_REQUIRE_ISA: unknown level {name:?} (known: all, {})",
                    Isa::ALL.map(Isa::env_name).join(", ")
                )
            });
        out.push(level);
    }
    out
}

/// The CPU's own answer for `level`, straight from the feature bits.
fn raw_cpu_has(level: Isa) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        let avx2 = is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c");
        let avx512 = avx2
            && is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vl");
        match level {
            Isa::Scalar => true,
            Isa::Avx2 => avx2,
            Isa::Avx512 => avx512,
            Isa::Avx512Vnni => avx512 && is_x86_feature_detected!("avx512vnni"),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        level == Isa::Scalar
    }
}

/// For tests of ISA-specific paths: whether `level` can run here. If it cannot, prints
/// `SKIPPED <what> on <level>` and returns false, or panics when `MTMD_REQUIRE_ISA` requires
/// `level` (CI must not lose its SIMD coverage silently).
pub fn runnable_or_skip(level: Isa, what: &str) -> bool {
    if level.is_available() {
        return true;
    }
    if required_isas().contains(&level) {
        panic!(
            "{what}: the {level:?} path is required by MTMD_REQUIRE_ISA but this CPU runs {:?} at best",
            Isa::detected()
        );
    }
    println!("SKIPPED {what} on {level:?} (not on this CPU)");
    false
}

/// The levels of `candidates` a test should run here: each one through [`runnable_or_skip`].
pub fn test_levels(candidates: &[Isa], what: &str) -> Vec<Isa> {
    candidates
        .iter()
        .copied()
        .filter(|&l| runnable_or_skip(l, what))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detection_agrees_with_the_raw_feature_bits() {
        for level in Isa::ALL {
            assert_eq!(level.is_available(), raw_cpu_has(level), "{level:?}");
        }
        assert_eq!(Isa::available().first(), Some(&Isa::Scalar));
        assert_eq!(Isa::available().last(), Some(&Isa::detected()));
    }

    #[test]
    fn required_levels_are_available_here() {
        // The switch itself: whatever CI requires, this machine must have.
        for level in required_isas() {
            assert!(runnable_or_skip(level, "MTMD_REQUIRE_ISA"), "{level:?}");
        }
    }
}
