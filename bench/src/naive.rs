//! Naive attention, the baseline every attention paper reports: `S = Q Kᵀ` and `O = P V` as
//! two batched cuBLAS products, with the full `S` matrix (batch x heads x seqlen²) in memory and a
//! row softmax kernel between them. Tensors are `(batch, heads, seqlen, headdim)`, contiguous.

use crate::cases::{Case, Dtype};
use cudarc::cublas::CudaBlas;
use cudarc::cublas::sys::{cublasComputeType_t, cublasGemmAlgo_t, cublasOperation_t, cudaDataType};
use cudarc::driver::{CudaStream, LaunchConfig, PushKernelArg};
use rustflash::Device;
use std::ffi::c_void;
use std::sync::Arc;

pub struct Naive {
    blas: CudaBlas,
    device: Device,
    stream: Arc<CudaStream>,
}

/// Device addresses of the operands.
pub struct NaiveBuffers {
    pub q: u64,
    pub k: u64,
    pub v: u64,
    /// `batch · heads · seqlen²` elements: S, overwritten in place by P.
    pub scores: u64,
    pub out: u64,
}

impl Naive {
    /// cuBLAS on `stream`, or why it is not available.
    pub fn new(device: &Device, stream: &Arc<CudaStream>) -> Result<Naive, String> {
        // SAFETY: only tries to open the library.
        if !unsafe { cudarc::cublas::sys::is_culib_present() } {
            return Err("libcublas was not found (add its folder to LD_LIBRARY_PATH)".into());
        }
        let blas = CudaBlas::new(stream.clone()).map_err(|e| format!("cuBLAS: {e:?}"))?;
        Ok(Naive { blas, device: device.clone(), stream: stream.clone() })
    }

    /// One forward pass.
    pub fn forward(&self, c: &Case, b: &NaiveBuffers) -> Result<(), String> {
        let (s, d) = (c.seqlen as i32, c.headdim as i32);
        let batch = (c.batch * c.heads) as i32;
        let ty = match c.dtype {
            Dtype::F16 => cudaDataType::CUDA_R_16F,
            Dtype::Bf16 => cudaDataType::CUDA_R_16BF,
        };
        let (one, zero) = (1.0f32, 0.0f32);
        let (sd, ss) = ((c.seqlen * c.headdim) as i64, (c.seqlen * c.seqlen) as i64);
        let gemm = |transa, m, n, k, a: u64, lda, sa, bb: u64, ldb, sb, cc: u64, ldc, sc| {
            // SAFETY: the buffers hold `batch` matrices at the given strides (the caller sized them).
            unsafe {
                cudarc::cublas::result::gemm_strided_batched_ex(
                    *self.blas.handle(),
                    transa,
                    cublasOperation_t::CUBLAS_OP_N,
                    m,
                    n,
                    k,
                    &one as *const f32 as *const c_void,
                    a as *const c_void,
                    ty,
                    lda,
                    sa,
                    bb as *const c_void,
                    ty,
                    ldb,
                    sb,
                    &zero as *const f32 as *const c_void,
                    cc as *mut c_void,
                    ty,
                    ldc,
                    sc,
                    batch,
                    cublasComputeType_t::CUBLAS_COMPUTE_32F,
                    cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
                )
            }
            .map_err(|e| format!("cuBLAS gemm: {e:?}"))
        };
        // Row-major S (s x s) is column-major Sᵀ = K Qᵀ.
        gemm(cublasOperation_t::CUBLAS_OP_T, s, s, d, b.k, d, sd, b.q, d, sd, b.scores, s, ss)?;
        let kernel = match c.dtype {
            Dtype::F16 => "naive_softmax_f16",
            Dtype::Bf16 => "naive_softmax_bf16",
        };
        let f = self.device.kernel(kernel, 32).map_err(|e| e.to_string())?;
        let rows = (c.batch * c.heads * c.seqlen) as u32;
        let cfg = LaunchConfig { grid_dim: (rows, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 32 };
        let scale_log2 = std::f32::consts::LOG2_E / (c.headdim as f32).sqrt();
        let (cols, causal) = (c.seqlen as u32, c.causal as u32);
        // SAFETY: one block per row of `scores`, which holds `rows · cols` elements.
        unsafe {
            self.stream
                .launch_builder(&f)
                .arg(&b.scores)
                .arg(&b.scores)
                .arg(&cols)
                .arg(&cols)
                .arg(&scale_log2)
                .arg(&causal)
                .launch(cfg)
        }
        .map_err(|e| e.to_string())?;
        // Row-major O (s x d) is column-major Oᵀ = Vᵀ Pᵀ.
        gemm(cublasOperation_t::CUBLAS_OP_N, d, s, s, b.v, d, sd, b.scores, s, ss, b.out, d, sd)
    }
}
