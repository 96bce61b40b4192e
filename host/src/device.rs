//! A handle on one GPU: its context, its limits, and the kernels of one path, loaded once.

use crate::error::{DriverContext, Error, Result};
use crate::{KernelPath, ptx};
use cudarc::driver::sys::CUdevice_attribute as Attr;
use cudarc::driver::sys::CUfunction_attribute as FuncAttr;
use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaStream};
use cudarc::nvrtc::Ptx;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// What the library reads off a GPU once, for tile choices and launch checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    pub ordinal: usize,
    pub name: String,
    pub compute_capability: (u32, u32),
    pub multiprocessors: u32,
    /// The most dynamic shared memory one block may use once its kernel opts in
    /// (T4 64 KB, RTX 30/40 99 KB, A100 163 KB, H100 227 KB).
    pub shared_memory_per_block: usize,
    pub shared_memory_per_multiprocessor: usize,
    pub max_threads_per_block: u32,
}

/// A GPU and the kernel path its launches use. Cheap to clone; `Send + Sync`, so one handle can
/// serve many threads. Kernels are loaded on first use and cached.
#[derive(Clone)]
pub struct Device {
    inner: Arc<Inner>,
}

struct Inner {
    ctx: Arc<CudaContext>,
    info: DeviceInfo,
    path: KernelPath,
    module: OnceLock<Arc<CudaModule>>,
    /// Each function with the dynamic shared memory it has been allowed so far.
    functions: Mutex<HashMap<String, (CudaFunction, usize)>>,
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
        let inner = Inner { ctx, info, path, module: OnceLock::new(), functions: Mutex::new(HashMap::new()) };
        Ok(Device { inner: Arc::new(inner) })
    }

    pub fn info(&self) -> &DeviceInfo {
        &self.inner.info
    }

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
    pub fn kernel(&self, name: &str, dynamic_shared_bytes: usize) -> Result<CudaFunction> {
        let limit = self.inner.info.shared_memory_per_block;
        if dynamic_shared_bytes > limit {
            return Err(Error::SharedMemoryLimit {
                kernel: name.into(),
                requested: dynamic_shared_bytes,
                limit,
            });
        }
        // A poisoned lock only means another thread panicked mid-insert; the map is still valid.
        let mut functions = self.inner.functions.lock().unwrap_or_else(|e| e.into_inner());
        if !functions.contains_key(name) {
            let module = self.module()?;
            let f = module
                .load_function(name)
                .map_err(|_| Error::MissingKernel { kernel: name.into(), path: self.inner.path })?;
            functions.insert(name.to_string(), (f, DEFAULT_SHARED_LIMIT));
        }
        let Some((f, allowed)) = functions.get_mut(name) else { unreachable!("inserted above") };
        if dynamic_shared_bytes > *allowed {
            f.set_attribute(
                FuncAttr::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                dynamic_shared_bytes as i32,
            )
            .during("raising a kernel's shared-memory limit")?;
            *allowed = dynamic_shared_bytes;
        }
        Ok(f.clone())
    }

    fn module(&self) -> Result<&Arc<CudaModule>> {
        if let Some(m) = self.inner.module.get() {
            return Ok(m);
        }
        let arch = self.inner.path.arch();
        let Some(embedded) = ptx::module(arch) else {
            return Err(Error::MissingKernel { kernel: format!("(module {arch})"), path: self.inner.path });
        };
        let module =
            self.inner.ctx.load_module(Ptx::from_src(embedded.ptx)).during("loading the PTX module")?;
        Ok(self.inner.module.get_or_init(|| module))
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
