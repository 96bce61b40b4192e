//! Device tensors: a `cudarc` buffer view plus shape and strides (in elements).
//!
//! The tensors are generic over their number of dimensions `N`, 4 by default: Q, K, V, O (and
//! the backward's dO, dQ, dK, dV) are `(batch, seqlen, heads, headdim)`; the log-sum-exp (and the
//! backward's row sums) is 3-D, `(batch, heads_q, seqlen_q)` f32, so `DeviceTensorMut<'_, f32, 3>`.

use crate::layout::Layout;
use cudarc::driver::{CudaView, CudaViewMut};

/// A read-only `N`-dimensional tensor on the GPU (default 4: `(batch, seqlen, heads, headdim)`).
/// Strides may be anything the operation accepts (q, k and v can be slices of one packed
/// buffer); the view must lie inside `data`, which starts at element `(0, .., 0)`.
pub struct DeviceTensor<'a, T, const N: usize = 4> {
    /// The buffer; its first element is the tensor's element `(0, .., 0)`.
    pub data: CudaView<'a, T>,
    /// Shape and strides, in elements, into `data`.
    pub layout: Layout<N>,
}

/// A writable `N`-dimensional tensor on the GPU (an output): like [`DeviceTensor`]. Operations
/// reject an output whose elements overlap each other or another operand.
pub struct DeviceTensorMut<'a, T, const N: usize = 4> {
    /// The buffer; its first element is the tensor's element `(0, .., 0)`.
    pub data: CudaViewMut<'a, T>,
    /// Shape and strides, in elements, into `data`.
    pub layout: Layout<N>,
}

impl<'a, T, const N: usize> DeviceTensor<'a, T, N> {
    /// `data` viewed with `shape` and `strides`; checked when it is used.
    pub fn new(data: CudaView<'a, T>, shape: [usize; N], strides: [usize; N]) -> Self {
        DeviceTensor { data, layout: Layout { shape, strides } }
    }
    /// `data` as a contiguous (row-major) tensor of `shape`.
    pub fn contiguous(data: CudaView<'a, T>, shape: [usize; N]) -> Self {
        DeviceTensor { data, layout: Layout::contiguous(shape) }
    }
}

impl<'a, T, const N: usize> DeviceTensorMut<'a, T, N> {
    /// `data` viewed with `shape` and `strides`; checked when it is used.
    pub fn new(data: CudaViewMut<'a, T>, shape: [usize; N], strides: [usize; N]) -> Self {
        DeviceTensorMut { data, layout: Layout { shape, strides } }
    }
    /// `data` as a contiguous (row-major) tensor of `shape`.
    pub fn contiguous(data: CudaViewMut<'a, T>, shape: [usize; N]) -> Self {
        DeviceTensorMut { data, layout: Layout::contiguous(shape) }
    }
}

/// A tensor given by raw device address, for framework integrations
/// ([`crate::FlashAttention::forward_raw`]); `N` dimensions, 4 by default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawTensor<const N: usize = 4> {
    /// Device address, in bytes, of element `(0, .., 0)` (the lowest addressed element).
    pub ptr: u64,
    /// Shape and strides, in elements, from `ptr`.
    pub layout: Layout<N>,
}

impl<const N: usize> RawTensor<N> {
    /// The tensor of `shape` and `strides` (in elements) whose element `(0, .., 0)` is at `ptr`.
    pub fn new(ptr: u64, shape: [usize; N], strides: [usize; N]) -> Self {
        RawTensor { ptr, layout: Layout { shape, strides } }
    }
}
