//! Which kernels run a problem: the row of [`FORWARD_CONFIGS`] (or [`BACKWARD_CONFIGS`]) for
//! the matrix-multiply family of the kernel path and element type, and the head-dim bucket, in
//! the largest tile class the GPU's shared memory holds (or the class a caller forces).

use crate::error::{Error, Result};
use crate::{F32Precision, KernelPath};
use rustflash_abi::{
    BACKWARD_CONFIGS, BackwardConfig, BackwardTile, Dtype, FORWARD_CONFIGS, ForwardConfig, ForwardTile,
    MmaFamily,
};

/// The matrix-multiply family that runs `dtype` on `path`: `mma.sync` on the Ampere and Hopper
/// modules (TF32, once or three times, for f32); on Volta's, WMMA for float16 and the CUDA cores
/// for float32 (whatever the precision: there is no TF32 there), and an error naming q's dtype for
/// bfloat16.
pub fn family(path: KernelPath, dtype: Dtype, precision: F32Precision) -> Result<MmaFamily> {
    Ok(match (path, dtype, precision) {
        (KernelPath::Volta, Dtype::F16, _) => MmaFamily::Wmma,
        (KernelPath::Volta, Dtype::F32, _) => MmaFamily::Simt,
        (KernelPath::Volta, _, _) => {
            return Err(Error::invalid(
                "q",
                format!(
                    "float16 or float32 on the {path} path (bfloat16 needs compute capability 8.0 or newer)"
                ),
                dtype.name(),
            ));
        }
        (_, Dtype::F32, F32Precision::Tf32) => MmaFamily::Tf32,
        (_, Dtype::F32, _) => MmaFamily::Tf32x3,
        (_, _, _) => MmaFamily::Sm80,
    })
}

/// The head-dim bucket of `head_dim`: the smallest configured bucket that holds it; `None`
/// outside 1..=256.
pub fn bucket(head_dim: usize) -> Option<usize> {
    if head_dim == 0 {
        return None;
    }
    FORWARD_CONFIGS.iter().map(|c| c.head_dim).filter(|&b| b >= head_dim).min()
}

/// The kernel of `path`'s family for `dtype` and `head_dim` (1..=256): the forced class, or the
/// first class in [`ForwardTile::ALL`] whose shared memory fits `shared_limit` bytes per block.
pub fn select(
    path: KernelPath,
    dtype: Dtype,
    precision: F32Precision,
    head_dim: usize,
    forced: Option<ForwardTile>,
    shared_limit: usize,
) -> Result<&'static ForwardConfig> {
    let bucket = bucket(head_dim).ok_or_else(|| Error::invalid("q", "head dim 1..=256", head_dim))?;
    let family = family(path, dtype, precision)?;
    let row = |tile: ForwardTile| {
        FORWARD_CONFIGS
            .iter()
            .find(|c| c.family == family && c.dtype == dtype && c.head_dim == bucket && c.tile == tile)
    };
    let too_big = |c: &ForwardConfig| Error::SharedMemoryLimit {
        kernel: c.name.into(),
        requested: c.shared_bytes(),
        limit: shared_limit,
    };
    if let Some(tile) = forced {
        let c = row(tile).ok_or_else(|| {
            Error::invalid("options.tile", "a tile class with kernels", format!("{tile:?}"))
        })?;
        return if c.shared_bytes() <= shared_limit { Ok(c) } else { Err(too_big(c)) };
    }
    let mut smallest = None;
    for c in ForwardTile::ALL.into_iter().filter_map(row) {
        if c.shared_bytes() <= shared_limit {
            return Ok(c);
        }
        smallest = Some(c);
    }
    Err(smallest.map(too_big).unwrap_or_else(|| Error::invalid("q", "a head dim with kernels", head_dim)))
}

/// The backward kernels of `path`'s family for `dtype` and `head_dim` (1..=256): the forced
/// class, or the first class in [`BackwardTile::ALL`] whose kernels all fit `shared_limit` bytes per block
/// ([`BackwardConfig::max_shared_bytes`], the larger of the main and the deterministic dQ
/// kernel's: a class serves both modes). [`Error::SharedMemoryLimit`] names the row's kernel
/// that needs the most.
pub fn select_backward(
    path: KernelPath,
    dtype: Dtype,
    precision: F32Precision,
    head_dim: usize,
    forced: Option<BackwardTile>,
    shared_limit: usize,
) -> Result<&'static BackwardConfig> {
    let bucket = bucket(head_dim).ok_or_else(|| Error::invalid("q", "head dim 1..=256", head_dim))?;
    let family = family(path, dtype, precision)?;
    let row = |tile: BackwardTile| {
        BACKWARD_CONFIGS
            .iter()
            .find(|c| c.family == family && c.dtype == dtype && c.head_dim == bucket && c.tile == tile)
    };
    let too_big = |c: &BackwardConfig| Error::SharedMemoryLimit {
        kernel: if c.shared_bytes() >= c.dq_shared_bytes() { c.name } else { c.dq_name }.into(),
        requested: c.max_shared_bytes(),
        limit: shared_limit,
    };
    if let Some(tile) = forced {
        let c = row(tile).ok_or_else(|| {
            Error::invalid("options.tile", "a tile class with backward kernels", format!("{tile:?}"))
        })?;
        return if c.max_shared_bytes() <= shared_limit { Ok(c) } else { Err(too_big(c)) };
    }
    let mut smallest = None;
    for c in BackwardTile::ALL.into_iter().filter_map(row) {
        if c.max_shared_bytes() <= shared_limit {
            return Ok(c);
        }
        smallest = Some(c);
    }
    Err(smallest.map(too_big).unwrap_or_else(|| {
        // Only the CUDA-core float32 family lacks buckets (rustflash_abi::backward_configs!).
        let most = BACKWARD_CONFIGS.iter().filter(|c| c.family == family).map(|c| c.head_dim).max();
        Error::invalid(
            "q",
            format!(
                "a head dim of at most {} for a {} backward on the {path} path",
                most.unwrap_or(0),
                dtype.name()
            ),
            head_dim,
        )
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_choice_follows_shared_memory() {
        let pick = |d, limit| {
            select(KernelPath::Ampere, Dtype::F16, F32Precision::default(), d, None, limit).map(|c| c.tile)
        };
        // H100 227 KB, A100 163 KB, RTX 99 KB: Large everywhere (96 KB at head dim 256).
        for limit in [227 * 1024, 163 * 1024, 99 * 1024] {
            for d in [1, 64, 128, 256] {
                assert_eq!(pick(d, limit).unwrap(), ForwardTile::Large);
            }
        }
        // T4-sized 64 KB: Large up to head dim 160 (60 KB), Small above.
        assert_eq!(pick(160, 64 * 1024).unwrap(), ForwardTile::Large);
        assert_eq!(pick(192, 64 * 1024).unwrap(), ForwardTile::Small);
        assert_eq!(pick(256, 64 * 1024).unwrap(), ForwardTile::Small);
        assert!(matches!(pick(256, 48 * 1024), Err(Error::SharedMemoryLimit { .. })));
        assert!(matches!(
            select(
                KernelPath::Ampere,
                Dtype::F16,
                F32Precision::default(),
                256,
                Some(ForwardTile::Large),
                64 * 1024
            ),
            Err(Error::SharedMemoryLimit { .. })
        ));
    }

    /// The modules that hold a family's kernels.
    fn modules(family: MmaFamily) -> &'static [&'static str] {
        match family {
            MmaFamily::Wmma | MmaFamily::Simt => &["sm_70"],
            _ => &["sm_80", "sm_90a"],
        }
    }

    /// Every kernel the dispatch can name is an `.entry` of every module of its family, with the
    /// block size its row says.
    #[test]
    fn every_configured_kernel_is_shipped() {
        for c in FORWARD_CONFIGS {
            for &arch in modules(c.family) {
                let k = crate::ptx::kernel(arch, c.name)
                    .unwrap_or_else(|| panic!("{} is not in the {arch} module", c.name));
                assert!(k.ptx.contains(&format!(".entry {}(", c.name)), "{} in {arch}", c.name);
                assert!(k.ptx.contains(&format!(".maxntid {}, 1, 1", c.threads())), "{} in {arch}", c.name);
            }
        }
    }

    /// float32 picks the TF32 rows of its precision on the Ampere and Hopper modules: Large on
    /// 99 KB and more (forward) or an A100's 163 KB (backward); on 99 KB the backward's Large
    /// where it fits, else Small up to head dim 224, none at 256. The Volta path runs it on the
    /// CUDA cores whatever the precision.
    #[test]
    fn f32_picks_the_rows_of_its_precision() {
        for (precision, family, prefix) in [
            (F32Precision::Tf32, MmaFamily::Tf32, "tf32_f32"),
            (F32Precision::Accurate, MmaFamily::Tf32x3, "tf32x3_f32"),
        ] {
            for path in [KernelPath::Ampere, KernelPath::Hopper] {
                for d in [1, 32, 64, 100, 128, 160, 192, 224, 256] {
                    let f = select(path, Dtype::F32, precision, d, None, 99 * 1024).unwrap();
                    assert!(f.family == family && f.tile == ForwardTile::Large, "{}", f.name);
                    assert!(f.name.starts_with(&format!("flash_fwd_{prefix}_")), "{}", f.name);
                    let b = select_backward(path, Dtype::F32, precision, d, None, 163 * 1024).unwrap();
                    assert!(b.family == family && b.tile == BackwardTile::Large, "{}", b.name);
                    assert!(b.pre_name.ends_with(&format!("_{prefix}")), "{}", b.pre_name);
                    let small = select_backward(path, Dtype::F32, precision, d, None, 99 * 1024);
                    if d <= 224 {
                        // Large where it fits 99 KB (b, the Large row), Small elsewhere.
                        let fits = b.max_shared_bytes() <= 99 * 1024;
                        let want = if fits { BackwardTile::Large } else { BackwardTile::Small };
                        assert_eq!(small.unwrap().tile, want, "head dim {d}");
                    } else {
                        assert!(matches!(small, Err(Error::SharedMemoryLimit { .. })), "head dim {d}");
                    }
                }
            }
        }
        for precision in [F32Precision::Tf32, F32Precision::Accurate] {
            let f = select(KernelPath::Volta, Dtype::F32, precision, 64, None, 96 * 1024).unwrap();
            assert!(f.family == MmaFamily::Simt && f.name.starts_with("flash_fwd_simt_f32_"), "{}", f.name);
        }
        // f16 and bf16 ignore the precision.
        for precision in [F32Precision::Tf32, F32Precision::Accurate] {
            assert_eq!(
                select(KernelPath::Ampere, Dtype::F16, precision, 64, None, 99 * 1024).unwrap().family,
                MmaFamily::Sm80
            );
        }
    }

    /// The Volta path picks WMMA rows: Large on a V100 (96 KB) at every head dim; on a T4
    /// (64 KB) Large forward up to head dim 224, Small above; backward Small from head dim 128 on
    /// (Large needs up to 94 KB); bfloat16 is an error naming q.
    #[test]
    fn the_volta_path_picks_wmma_rows() {
        let v100 = 96 * 1024;
        let t4 = 64 * 1024;
        for d in [1, 32, 64, 100, 128, 160, 192, 224, 256] {
            let f = select(KernelPath::Volta, Dtype::F16, F32Precision::default(), d, None, v100).unwrap();
            assert!(f.family == MmaFamily::Wmma && f.tile == ForwardTile::Large, "{}", f.name);
            assert!(f.name.starts_with("flash_fwd_sm70_f16_"), "{}", f.name);
            let b = select_backward(KernelPath::Volta, Dtype::F16, F32Precision::default(), d, None, v100)
                .unwrap();
            assert!(b.family == MmaFamily::Wmma && b.tile == BackwardTile::Large, "{}", b.name);
            let on_t4 =
                select(KernelPath::Volta, Dtype::F16, F32Precision::default(), d, None, t4).unwrap().tile;
            assert_eq!(on_t4, if d <= 224 { ForwardTile::Large } else { ForwardTile::Small }, "head dim {d}");
            assert!(
                select_backward(KernelPath::Volta, Dtype::F16, F32Precision::default(), d, None, t4).is_ok(),
                "head dim {d}"
            );
        }
        let err = select(KernelPath::Volta, Dtype::Bf16, F32Precision::default(), 64, None, v100)
            .unwrap_err()
            .to_string();
        assert!(err.contains("q") && err.contains("bf16") && err.contains("8.0"), "{err}");
        assert!(
            select_backward(KernelPath::Volta, Dtype::Bf16, F32Precision::default(), 64, None, v100).is_err()
        );
        // float32 on the CUDA cores: Large on a V100, but no backward above head dim 224 (an
        // error naming q); on a T4 the forward at every head dim, the backward up to 128.
        for d in [1, 32, 64, 100, 128, 160, 192, 224, 256] {
            let f = select(KernelPath::Volta, Dtype::F32, F32Precision::default(), d, None, v100).unwrap();
            assert!(f.family == MmaFamily::Simt && f.tile == ForwardTile::Large, "{}", f.name);
            assert!(select(KernelPath::Volta, Dtype::F32, F32Precision::default(), d, None, t4).is_ok());
            let b = select_backward(KernelPath::Volta, Dtype::F32, F32Precision::default(), d, None, v100);
            if d <= 224 {
                let b = b.unwrap();
                assert!(b.family == MmaFamily::Simt && b.tile == BackwardTile::Large, "{}", b.name);
            } else {
                let err = b.unwrap_err().to_string();
                assert!(err.contains("q") && err.contains("at most 224"), "{err}");
            }
            let b = select_backward(KernelPath::Volta, Dtype::F32, F32Precision::default(), d, None, t4);
            assert_eq!(b.is_ok(), d <= 128, "head dim {d}");
        }
        let forced = select_backward(
            KernelPath::Volta,
            Dtype::F32,
            F32Precision::default(),
            160,
            Some(BackwardTile::Small),
            v100,
        );
        assert!(forced.unwrap_err().to_string().contains("options.tile"));
        // The Ampere and Hopper paths never pick a WMMA row.
        for path in [KernelPath::Ampere, KernelPath::Hopper] {
            assert_eq!(
                select(path, Dtype::F16, F32Precision::default(), 64, None, t4).unwrap().family,
                MmaFamily::Sm80
            );
        }
    }

    #[test]
    fn buckets_round_up() {
        assert_eq!(bucket(0), None);
        assert_eq!(bucket(1), Some(32));
        assert_eq!(bucket(59), Some(64));
        assert_eq!(bucket(128), Some(128));
        assert_eq!(bucket(129), Some(160));
        assert_eq!(bucket(257), None);
    }

    #[test]
    fn the_dtype_selects_by_type() {
        for d in [32, 100, 256] {
            assert!(
                select(KernelPath::Ampere, Dtype::Bf16, F32Precision::default(), d, None, 227 * 1024)
                    .unwrap()
                    .name
                    .contains("_bf16_")
            );
            assert!(
                select(KernelPath::Ampere, Dtype::F16, F32Precision::default(), d, None, 227 * 1024)
                    .unwrap()
                    .name
                    .contains("_f16_")
            );
        }
    }

    #[test]
    fn the_backward_choice_follows_shared_memory() {
        let pick = |d, limit| {
            select_backward(KernelPath::Ampere, Dtype::F16, F32Precision::default(), d, None, limit)
                .map(|c| c.tile)
        };
        // H100 227 KB, A100 163 KB: Large at every head dim (145 KB at 128, 144.5 KB at 256).
        for limit in [227 * 1024, 163 * 1024] {
            for d in [1, 32, 64, 96, 128, 160, 192, 224, 256] {
                assert_eq!(pick(d, limit).unwrap(), BackwardTile::Large, "head dim {d}");
            }
        }
        // RTX-sized 99 KB: Large while it fits (32, 64, and 160), Small at 96, 128 and from 192.
        for d in [32, 64, 160] {
            assert_eq!(pick(d, 99 * 1024).unwrap(), BackwardTile::Large, "head dim {d}");
        }
        for d in [96, 128, 192, 224, 256] {
            assert_eq!(pick(d, 99 * 1024).unwrap(), BackwardTile::Small, "head dim {d}");
        }
        // T4-sized 64 KB: Small up to bucket 224, nothing at 256.
        for d in [1, 32, 64, 96, 128, 160, 192, 224] {
            assert_eq!(pick(d, 64 * 1024).unwrap(), BackwardTile::Small, "head dim {d}");
        }
        match pick(256, 64 * 1024) {
            Err(Error::SharedMemoryLimit { kernel, requested, limit }) => {
                assert!(kernel.starts_with("flash_bwd_sm80_f16_d256_"), "{kernel}");
                assert!(requested > limit);
            }
            other => panic!("expected a shared memory error, got {other:?}"),
        }
        // The first that fits, in order of preference, for every row and limit.
        for limit in [48 * 1024, 64 * 1024, 99 * 1024, 163 * 1024, 227 * 1024] {
            for d in (32..=256).step_by(32) {
                let want = BackwardTile::ALL.into_iter().find(|&t| {
                    BACKWARD_CONFIGS.iter().any(|c| {
                        c.family == MmaFamily::Sm80
                            && c.head_dim == d
                            && c.tile == t
                            && c.max_shared_bytes() <= limit
                    })
                });
                assert_eq!(pick(d, limit).ok(), want, "head dim {d} under {limit} bytes");
            }
        }
        // Forced classes.
        assert!(matches!(
            select_backward(
                KernelPath::Ampere,
                Dtype::F16,
                F32Precision::default(),
                128,
                Some(BackwardTile::Large),
                99 * 1024
            ),
            Err(Error::SharedMemoryLimit { .. })
        ));
        let small = select_backward(
            KernelPath::Ampere,
            Dtype::Bf16,
            F32Precision::default(),
            128,
            Some(BackwardTile::Small),
            227 * 1024,
        )
        .unwrap();
        assert_eq!((small.tile, small.head_dim), (BackwardTile::Small, 128));
        assert!(small.name.contains("_bf16_"));
        assert!(matches!(
            select_backward(KernelPath::Ampere, Dtype::F16, F32Precision::default(), 257, None, 227 * 1024),
            Err(Error::InvalidArgument { .. })
        ));
    }

    /// Every backward kernel the dispatch can name (all four of every row) is an `.entry` of the
    /// modules of its family, with the block size its row says.
    #[test]
    fn every_configured_backward_kernel_is_shipped() {
        let threads = rustflash_abi::ROW_KERNEL_THREADS;
        for c in BACKWARD_CONFIGS {
            for &arch in modules(c.family) {
                for (name, block) in [
                    (c.name, c.threads()),
                    (c.dq_name, c.dq_threads()),
                    (c.pre_name, threads),
                    (c.convert_name, threads),
                ] {
                    let k = crate::ptx::kernel(arch, name)
                        .unwrap_or_else(|| panic!("{name} is not in the {arch} module"));
                    assert!(k.ptx.contains(&format!(".entry {name}(")), "{name} in {arch}");
                    assert!(k.ptx.contains(&format!(".maxntid {block}, 1, 1")), "{name} in {arch}");
                }
            }
        }
    }
}
