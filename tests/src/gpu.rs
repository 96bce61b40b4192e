//! GPU helpers for tests: the device for a forced path, and buffers to and from the host.

use crate::harness::Failure;
use rustflash::cudarc::driver::{CudaSlice, CudaStream, DeviceRepr, LaunchConfig};
use rustflash::{Device, KernelPath};
use std::sync::Arc;

/// Device 0 forced onto `path`, with a fresh stream; a skip when it cannot run the path.
pub fn open(path: KernelPath) -> Result<(Device, Arc<CudaStream>), Failure> {
    let device = Device::with_path(0, path)?;
    let stream = device.new_stream()?;
    Ok((device, stream))
}

pub fn upload<T: DeviceRepr>(stream: &Arc<CudaStream>, data: &[T]) -> Result<CudaSlice<T>, Failure> {
    Ok(stream.clone_htod(data)?)
}

pub fn download<T: DeviceRepr + Clone + Default>(
    stream: &Arc<CudaStream>,
    buf: &CudaSlice<T>,
) -> Result<Vec<T>, Failure> {
    Ok(stream.clone_dtoh(buf)?)
}

/// A device buffer of `n` copies of `poison`, so that any element a kernel fails to write is seen.
pub fn poisoned<T: DeviceRepr + Clone>(
    stream: &Arc<CudaStream>,
    n: usize,
    poison: T,
) -> Result<CudaSlice<T>, Failure> {
    upload(stream, &vec![poison; n])
}

/// One block of `threads` threads with `shared_bytes` of dynamic shared memory.
pub fn one_block(threads: u32, shared_bytes: u32) -> LaunchConfig {
    LaunchConfig { grid_dim: (1, 1, 1), block_dim: (threads, 1, 1), shared_mem_bytes: shared_bytes }
}
