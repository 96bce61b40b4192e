//! A handle on one GPU: its context, its limits, and the kernels of one path, each loaded the
//! first time it is asked for.
//!
//! Every kernel is its own PTX module (see [`crate::ptx`]): the driver JIT-compiles a module
//! when it is loaded, so loading one kernel at a time means a process waits only for the kernels
//! it launches, not for all of them at its first launch. The driver keeps what it compiled in its
//! JIT cache (`~/.nv/ComputeCache`, or `CUDA_CACHE_PATH`), so later processes load faster still.

use crate::error::{DriverContext, Error, Result};
use crate::{KernelPath, ptx};
use cudarc::driver::sys::CUdevice_attribute as Attr;
use cudarc::driver::sys::CUfunction_attribute as FuncAttr;
use cudarc::driver::{CudaContext, CudaFunction, CudaStream};
use cudarc::nvrtc::Ptx;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// What the library reads off a GPU once, for tile choices and launch checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    /// The CUDA device ordinal, as given to [`Device::new`].
    pub ordinal: usize,
    /// The name the driver reports, e.g. `NVIDIA H100 80GB HBM3`.
    pub name: String,
    /// Compute capability `(major, minor)`, e.g. `(9, 0)` for the H100.
    pub compute_capability: (u32, u32),
    /// The number of streaming multiprocessors (SMs).
    pub multiprocessors: u32,
    /// The most dynamic shared memory one block may use once its kernel opts in
    /// (T4 64 KB, RTX 30/40 99 KB, A100 163 KB, H100 227 KB).
    pub shared_memory_per_block: usize,
    /// Shared memory of one multiprocessor in bytes, split among the blocks resident on it.
    pub shared_memory_per_multiprocessor: usize,
    /// The most threads one block may have.
    pub max_threads_per_block: u32,
}

/// A GPU and the kernel path its launches use. Cheap to clone; `Send + Sync`, so one handle can
/// serve many threads. Each kernel's module is loaded (JIT-compiled by the driver) on its first
/// use and cached; threads asking for different kernels do not wait for each other.
#[derive(Clone)]
pub struct Device {
    inner: Arc<Inner>,
}

struct Inner {
    ctx: Arc<CudaContext>,
    info: DeviceInfo,
    path: KernelPath,
    /// One slot for every kernel of the path's architecture, filled on first use.
    kernels: HashMap<&'static str, KernelSlot>,
}

struct KernelSlot {
    ptx: &'static ptx::EmbeddedKernel,
    loaded: Mutex<Option<Loaded>>,
}

struct Loaded {
    /// Holds its module alive.
    function: CudaFunction,
    /// The dynamic shared memory the function has been allowed so far.
    shared_allowed: usize,
    /// How long loading the module (the driver's JIT compilation included) took.
    load_time: Duration,
}

/// Shared memory a block may use without opting in.
const DEFAULT_SHARED_LIMIT: usize = 48 * 1024;

/// Loads the driver library, or says why not. `cudarc` panics when it cannot find `libcuda`, so
/// every entry point asks here first.
pub fn driver_available() -> Result<()> {
    static PRESENT: OnceLock<bool> = OnceLock::new();
    // SAFETY: `is_culib_present` only tries to open the library by its known names.
    let present = *PRESENT.get_or_init(|| unsafe { cudarc::driver::sys::is_culib_present() });
    if present { Ok(()) } else { Err(Error::NoDriver) }
}

/// The number of CUDA devices; an error when there is no driver.
pub fn device_count() -> Result<usize> {
    driver_available()?;
    Ok(CudaContext::device_count().during("counting devices")?.max(0) as usize)
}

impl Device {
    /// The GPU `ordinal`, on its native path ([`KernelPath::native`]).
    pub fn new(ordinal: usize) -> Result<Device> {
        Self::open(ordinal, None)
    }

    /// The GPU `ordinal`, forced onto `path` (e.g. the Volta path on an H100, to test it).
    /// An error if the GPU cannot run that path.
    pub fn with_path(ordinal: usize, path: KernelPath) -> Result<Device> {
        Self::open(ordinal, Some(path))
    }

    fn open(ordinal: usize, forced: Option<KernelPath>) -> Result<Device> {
        let count = device_count()?;
        if ordinal >= count {
            return Err(Error::NoDevice { ordinal, count });
        }
        let ctx = CudaContext::new(ordinal).during("creating the context")?;
        let info = read_info(&ctx, ordinal)?;
        let (major, minor) = info.compute_capability;
        let path = match forced {
            Some(p) if p.runs_on(major, minor) => p,
            Some(path) => return Err(Error::PathUnavailable { path, compute_capability: (major, minor) }),
            None => KernelPath::native(major, minor).ok_or_else(|| Error::UnsupportedDevice {
                ordinal,
                name: info.name.clone(),
                compute_capability: (major, minor),
            })?,
        };
        let kernels = ptx::kernels(path.arch())
            .map(|k| (k.name, KernelSlot { ptx: k, loaded: Mutex::new(None) }))
            .collect();
        let inner = Inner { ctx, info, path, kernels };
        Ok(Device { inner: Arc::new(inner) })
    }

    /// What was read off the GPU when this handle was opened.
    pub fn info(&self) -> &DeviceInfo {
        &self.inner.info
    }

    /// The kernel path this device's launches use: the native one, or the one forced by
    /// [`Device::with_path`].
    pub fn path(&self) -> KernelPath {
        self.inner.path
    }

    /// The `cudarc` context, for allocations and streams.
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.inner.ctx
    }

    /// A new stream on this device.
    pub fn new_stream(&self) -> Result<Arc<CudaStream>> {
        self.inner.ctx.new_stream().during("creating a stream")
    }

    /// The kernel `name` of this device's path, allowed `dynamic_shared_bytes` of dynamic shared
    /// memory per block (the limit is raised above 48 KB the first time a launch asks).
    ///
    /// The first call for a kernel loads its module, which makes the driver JIT-compile it
    /// (from tens of milliseconds to seconds for the largest kernels, unless the driver's cache
    /// has it); later calls return the cached function.
    pub fn kernel(&self, name: &str, dynamic_shared_bytes: usize) -> Result<CudaFunction> {
        let limit = self.inner.info.shared_memory_per_block;
        if dynamic_shared_bytes > limit {
            return Err(Error::SharedMemoryLimit {
                kernel: name.into(),
                requested: dynamic_shared_bytes,
                limit,
            });
        }
        let Some(slot) = self.inner.kernels.get(name) else {
            return Err(Error::MissingKernel { kernel: name.into(), path: self.inner.path });
        };
        // Only callers of this same kernel wait here while it loads. A poisoned lock only means
        // another thread panicked while holding it; the slot is still valid.
        let mut loaded = slot.loaded.lock().unwrap_or_else(|e| e.into_inner());
        let kernel = match loaded.take() {
            Some(k) => k,
            None => self.load(slot.ptx)?,
        };
        let kernel = loaded.insert(kernel);
        if dynamic_shared_bytes > kernel.shared_allowed {
            kernel
                .function
                .set_attribute(
                    FuncAttr::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    dynamic_shared_bytes as i32,
                )
                .during("raising a kernel's shared-memory limit")?;
            kernel.shared_allowed = dynamic_shared_bytes;
        }
        Ok(kernel.function.clone())
    }

    /// The kernels loaded so far on this device, with the time each load took (JIT compilation
    /// included), in name order.
    pub fn loaded_kernels(&self) -> Vec<(&'static str, Duration)> {
        let mut v: Vec<(&'static str, Duration)> = self
            .inner
            .kernels
            .iter()
            .filter_map(|(&name, slot)| {
                let loaded = slot.loaded.lock().unwrap_or_else(|e| e.into_inner());
                loaded.as_ref().map(|k| (name, k.load_time))
            })
            .collect();
        v.sort();
        v
    }

    fn load(&self, kernel: &ptx::EmbeddedKernel) -> Result<Loaded> {
        let start = Instant::now();
        let module = self
            .inner
            .ctx
            .load_module(Ptx::from_src(kernel.ptx))
            .during("loading a kernel's PTX module (the driver's JIT compilation)")?;
        let function = module
            .load_function(kernel.name)
            .map_err(|_| Error::MissingKernel { kernel: kernel.name.into(), path: self.inner.path })?;
        Ok(Loaded { function, shared_allowed: DEFAULT_SHARED_LIMIT, load_time: start.elapsed() })
    }
}

fn read_info(ctx: &Arc<CudaContext>, ordinal: usize) -> Result<DeviceInfo> {
    let attr = |a: Attr| ctx.attribute(a).map(|v| v.max(0) as u32).during("reading device attributes");
    Ok(DeviceInfo {
        ordinal,
        name: ctx.name().during("reading the device name")?,
        compute_capability: (
            attr(Attr::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?,
            attr(Attr::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?,
        ),
        multiprocessors: attr(Attr::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?,
        shared_memory_per_block: attr(Attr::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)? as usize,
        shared_memory_per_multiprocessor: attr(
            Attr::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR,
        )? as usize,
        max_threads_per_block: attr(Attr::CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn handles_are_send_and_sync() {
        assert_send_sync::<Device>();
    }
}
