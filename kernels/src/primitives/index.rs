//! Thread, block and warp indices (1-D blocks for the lane and warp helpers).

use core::arch::nvptx;

macro_rules! special_register {
    ($(#[$doc:meta] $name:ident => $intrinsic:ident;)*) => {$(
        #[$doc]
        #[inline(always)]
        pub fn $name() -> u32 {
            // SAFETY: reading a special register has no preconditions.
            unsafe { nvptx::$intrinsic() as u32 }
        }
    )*};
}

special_register! {
    /// `%tid.x`
    thread_idx_x => _thread_idx_x;
    /// `%ctaid.x`
    block_idx_x => _block_idx_x;
    /// `%ctaid.y`
    block_idx_y => _block_idx_y;
    /// `%ntid.x`
    block_dim_x => _block_dim_x;
    /// `%nctaid.x`
    grid_dim_x => _grid_dim_x;
}

/// The lane of the calling thread in its warp (0..32), for 1-D blocks.
#[inline(always)]
pub fn lane_id() -> u32 {
    thread_idx_x() % 32
}

/// The warp of the calling thread in its block, for 1-D blocks.
#[inline(always)]
pub fn warp_id() -> u32 {
    thread_idx_x() / 32
}
