//! Head-dim buckets and tile shapes of the forward kernels, and the choice between them.
//!
//! Kernel names follow `kernels/src/attention/forward_entries.rs`:
//! `flash_fwd_sm80_<dtype>_d<bucket>_m<BM>n<BN>`.

/// Head dims are padded inside the kernel to one of these.
pub const BUCKETS: [usize; 8] = [32, 64, 96, 128, 160, 192, 224, 256];

/// The smallest bucket that holds `head_dim` (1..=256).
pub fn bucket(head_dim: usize) -> Option<usize> {
    BUCKETS.into_iter().find(|&b| b >= head_dim)
}

/// A forward tile shape. The default is the largest one the GPU's shared memory holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ForwardTile {
    /// 128 query rows, 64 keys (32 above head dim 128), 8 warps.
    Wide,
    /// 64 query rows, 32 keys, 4 warps: fits 64 KB of shared memory at head dim 256.
    Narrow,
}

impl ForwardTile {
    pub const ALL: [ForwardTile; 2] = [ForwardTile::Wide, ForwardTile::Narrow];

    /// (query rows, keys) per block for a bucket.
    pub fn block(self, bucket: usize) -> (usize, usize) {
        match self {
            ForwardTile::Wide if bucket <= 128 => (128, 64),
            ForwardTile::Wide => (128, 32),
            ForwardTile::Narrow => (64, 32),
        }
    }

    /// Threads per block: two per query row (a warp per 16 rows).
    pub fn threads(self, bucket: usize) -> usize {
        2 * self.block(bucket).0
    }

    /// Dynamic shared memory: the Q tile and one K and one V tile of 16-bit elements.
    pub fn shared_bytes(self, bucket: usize) -> usize {
        let (bm, bn) = self.block(bucket);
        2 * bucket * (bm + 2 * bn)
    }

    /// The largest tile whose shared memory fits `limit` bytes.
    pub fn choose(bucket: usize, limit: usize) -> Option<ForwardTile> {
        Self::ALL.into_iter().find(|t| t.shared_bytes(bucket) <= limit)
    }

    /// The kernel's name in the `sm_80` module.
    pub fn kernel_name(self, bf16: bool, bucket: usize) -> Option<&'static str> {
        let b = BUCKETS.iter().position(|&x| x == bucket)?;
        let t = ForwardTile::ALL.iter().position(|&x| x == self)?;
        Some(NAMES[bf16 as usize][t][b])
    }
}

macro_rules! names {
    ($dtype:literal, $($m:literal $n:literal $n_big:literal),*) => {
        [$([
            concat!("flash_fwd_sm80_", $dtype, "_d32_m", $m, "n", $n),
            concat!("flash_fwd_sm80_", $dtype, "_d64_m", $m, "n", $n),
            concat!("flash_fwd_sm80_", $dtype, "_d96_m", $m, "n", $n),
            concat!("flash_fwd_sm80_", $dtype, "_d128_m", $m, "n", $n),
            concat!("flash_fwd_sm80_", $dtype, "_d160_m", $m, "n", $n_big),
            concat!("flash_fwd_sm80_", $dtype, "_d192_m", $m, "n", $n_big),
            concat!("flash_fwd_sm80_", $dtype, "_d224_m", $m, "n", $n_big),
            concat!("flash_fwd_sm80_", $dtype, "_d256_m", $m, "n", $n_big),
        ]),*]
    };
}

/// `[dtype (f16, bf16)][tile (Wide, Narrow)][bucket]`.
static NAMES: [[[&str; 8]; 2]; 2] =
    [names!("f16", "128" "64" "32", "64" "32" "32"), names!("bf16", "128" "64" "32", "64" "32" "32")];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_the_tile_shapes() {
        for bf16 in [false, true] {
            for t in ForwardTile::ALL {
                for b in BUCKETS {
                    let (m, n) = t.block(b);
                    let dtype = if bf16 { "bf16" } else { "f16" };
                    assert_eq!(
                        t.kernel_name(bf16, b).unwrap(),
                        format!("flash_fwd_sm80_{dtype}_d{b}_m{m}n{n}")
                    );
                }
            }
        }
    }

    #[test]
    fn choice_follows_shared_memory() {
        // H100 227 KB, A100 163 KB, RTX 99 KB: Wide everywhere (96 KB at d = 256).
        assert_eq!(ForwardTile::choose(256, 99 * 1024), Some(ForwardTile::Wide));
        assert_eq!(ForwardTile::choose(256, 64 * 1024), Some(ForwardTile::Narrow));
        assert_eq!(ForwardTile::choose(128, 64 * 1024), Some(ForwardTile::Wide));
        assert_eq!(bucket(59), Some(64));
        assert_eq!(bucket(257), None);
    }
}
