//! Device tensors: a `cudarc` buffer view plus shape and strides (in elements).

use crate::layout::Layout4;
use cudarc::driver::{CudaView, CudaViewMut};

/// A read-only 4-D tensor on the GPU. Shapes are `(batch, seqlen, heads, headdim)`; strides
/// may be anything with the last one 1 (so q, k and v can be slices of one packed buffer).
pub struct DeviceTensor<'a, T> {
    pub data: CudaView<'a, T>,
    pub layout: Layout4,
}

/// A writable 4-D tensor on the GPU (an output).
pub struct DeviceTensorMut<'a, T> {
    pub data: CudaViewMut<'a, T>,
    pub layout: Layout4,
}

impl<'a, T> DeviceTensor<'a, T> {
    /// `data` viewed with `shape` and `strides`; checked when it is used.
    pub fn new(data: CudaView<'a, T>, shape: [usize; 4], strides: [usize; 4]) -> Self {
        DeviceTensor { data, layout: Layout4 { shape, strides } }
    }
    /// `data` as a contiguous (row-major) tensor of `shape`.
    pub fn contiguous(data: CudaView<'a, T>, shape: [usize; 4]) -> Self {
        DeviceTensor { data, layout: Layout4::contiguous(shape) }
    }
}

impl<'a, T> DeviceTensorMut<'a, T> {
    pub fn new(data: CudaViewMut<'a, T>, shape: [usize; 4], strides: [usize; 4]) -> Self {
        DeviceTensorMut { data, layout: Layout4 { shape, strides } }
    }
    pub fn contiguous(data: CudaViewMut<'a, T>, shape: [usize; 4]) -> Self {
        DeviceTensorMut { data, layout: Layout4::contiguous(shape) }
    }
}

/// A tensor given by raw device address, for framework integrations ([`crate::FlashAttention::forward_raw`]).
#[derive(Clone, Copy, Debug)]
pub struct RawTensor {
    /// Device address of element `(0, 0, 0, 0)`.
    pub ptr: u64,
    pub layout: Layout4,
}
