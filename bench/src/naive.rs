//! Naive attention, the baseline every attention paper reports: `S = Q Kᵀ` and `O = P V` as
//! two batched cuBLAS products, with the full `S` matrix (batch x heads x seqlen²) in memory and a
//! row softmax kernel between them. Tensors are `(batch, heads, seqlen, headdim)`, contiguous.
//!
//! Its backward keeps the forward's `P` and materialises `dP` beside it, as autograd does:
//! `dP = dO Vᵀ`, `dS = P ∘ (dP − rowsum(P ∘ dP))` (softmax's backward, a row kernel;
//! `rowsum(P ∘ dP) = rowsum(dO ∘ O)`), `dV = Pᵀ dO`, `dQ = scale · dS K`, `dK = scale · dSᵀ Q`:
//! four batched cuBLAS products around the row kernel.

use crate::cases::{Case, Dtype};
use cudarc::cublas::CudaBlas;
use cudarc::cublas::sys::{cublasComputeType_t, cublasGemmAlgo_t, cublasOperation_t, cudaDataType};
use cudarc::driver::{CudaFunction, CudaStream, LaunchConfig, PushKernelArg};
use rustflash::Device;
use std::ffi::c_void;
use std::sync::Arc;

pub struct Naive {
    blas: CudaBlas,
    device: Device,
    stream: Arc<CudaStream>,
}

/// Device addresses of the forward's operands.
pub struct NaiveBuffers {
    pub q: u64,
    pub k: u64,
    pub v: u64,
    /// `batch · heads · seqlen²` elements: S, overwritten in place by P.
    pub scores: u64,
    pub out: u64,
}

/// Device addresses of the backward's operands.
pub struct NaiveBackwardBuffers {
    pub q: u64,
    pub k: u64,
    pub v: u64,
    pub dout: u64,
    /// `batch · heads · seqlen²` elements: the forward's P (read).
    pub probs: u64,
    /// `batch · heads · seqlen²` elements: dP, overwritten in place by dS.
    pub dprobs: u64,
    pub dq: u64,
    pub dk: u64,
    pub dv: u64,
}

/// The row kernel of the backward, `dS = P ∘ (dP − rowsum(P ∘ dP))`, by element type.
pub fn backward_kernel(dtype: Dtype) -> &'static str {
    match dtype {
        Dtype::F16 => "naive_softmax_backward_f16",
        Dtype::Bf16 => "naive_softmax_backward_bf16",
    }
}

const N: cublasOperation_t = cublasOperation_t::CUBLAS_OP_N;
const T: cublasOperation_t = cublasOperation_t::CUBLAS_OP_T;

/// One batched product in column-major terms: `C = alpha · op(A) op(B)`, `batch` matrices at
/// the given element strides.
struct Gemm {
    transa: cublasOperation_t,
    transb: cublasOperation_t,
    m: i32,
    n: i32,
    k: i32,
    alpha: f32,
    a: (u64, i32, i64),
    b: (u64, i32, i64),
    c: (u64, i32, i64),
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

    /// Whether the backward can run: its row kernel is in this build.
    pub fn backward_available(&self, dtype: Dtype) -> Result<(), String> {
        let name = backward_kernel(dtype);
        self.device.kernel(name, 32).map(|_| ()).map_err(|e| {
            format!(
                "naive backward not available: {e} (its dS = P∘(dP − rowsum(P∘dP)) row kernel `{name}`; \
                 cuBLAS has no elementwise product and `naive_softmax` cannot do this step)"
            )
        })
    }

    fn gemm(&self, c: &Case, g: Gemm) -> Result<(), String> {
        let ty = match c.dtype {
            Dtype::F16 => cudaDataType::CUDA_R_16F,
            Dtype::Bf16 => cudaDataType::CUDA_R_16BF,
        };
        let zero = 0.0f32;
        let batch = (c.batch * c.heads) as i32;
        // SAFETY: the buffers hold `batch` matrices at the given strides (the caller sized them).
        unsafe {
            cudarc::cublas::result::gemm_strided_batched_ex(
                *self.blas.handle(),
                g.transa,
                g.transb,
                g.m,
                g.n,
                g.k,
                &g.alpha as *const f32 as *const c_void,
                g.a.0 as *const c_void,
                ty,
                g.a.1,
                g.a.2,
                g.b.0 as *const c_void,
                ty,
                g.b.1,
                g.b.2,
                &zero as *const f32 as *const c_void,
                g.c.0 as *mut c_void,
                ty,
                g.c.1,
                g.c.2,
                batch,
                cublasComputeType_t::CUBLAS_COMPUTE_32F,
                cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(|e| format!("cuBLAS gemm: {e:?}"))
    }

    /// A row kernel over the `batch · heads · seqlen` rows of `seqlen` elements and its launch:
    /// one block of 256 threads per row, 32 bytes of shared memory.
    fn row_kernel(&self, c: &Case, kernel: &str) -> Result<(CudaFunction, LaunchConfig), String> {
        let f = self.device.kernel(kernel, 32).map_err(|e| e.to_string())?;
        let rows = (c.batch * c.heads * c.seqlen) as u32;
        Ok((f, LaunchConfig { grid_dim: (rows, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 32 }))
    }

    fn dims(c: &Case) -> (i32, i32, i64, i64) {
        (c.seqlen as i32, c.headdim as i32, (c.seqlen * c.headdim) as i64, (c.seqlen * c.seqlen) as i64)
    }

    /// One forward pass.
    pub fn forward(&self, c: &Case, b: &NaiveBuffers) -> Result<(), String> {
        let (s, d, sd, ss) = Self::dims(c);
        // Row-major S (s x s) is column-major Sᵀ = K Qᵀ.
        self.gemm(
            c,
            Gemm {
                transa: T,
                transb: N,
                m: s,
                n: s,
                k: d,
                alpha: 1.0,
                a: (b.k, d, sd),
                b: (b.q, d, sd),
                c: (b.scores, s, ss),
            },
        )?;
        let kernel = match c.dtype {
            Dtype::F16 => "naive_softmax_f16",
            Dtype::Bf16 => "naive_softmax_bf16",
        };
        let scale_log2 = std::f32::consts::LOG2_E / (c.headdim as f32).sqrt();
        let (cols, causal) = (c.seqlen as u32, c.causal as u32);
        let (f, cfg) = self.row_kernel(c, kernel)?;
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
        self.gemm(
            c,
            Gemm {
                transa: N,
                transb: N,
                m: d,
                n: s,
                k: s,
                alpha: 1.0,
                a: (b.v, d, sd),
                b: (b.scores, s, ss),
                c: (b.out, d, sd),
            },
        )
    }

    /// One backward pass, from the forward's P (causal masking is in P's zeros).
    pub fn backward(&self, c: &Case, b: &NaiveBackwardBuffers) -> Result<(), String> {
        let (s, d, sd, ss) = Self::dims(c);
        let scale = 1.0 / (c.headdim as f32).sqrt();
        // Row-major dP = dO Vᵀ is column-major dPᵀ = V dOᵀ.
        self.gemm(
            c,
            Gemm {
                transa: T,
                transb: N,
                m: s,
                n: s,
                k: d,
                alpha: 1.0,
                a: (b.v, d, sd),
                b: (b.dout, d, sd),
                c: (b.dprobs, s, ss),
            },
        )?;
        let cols = c.seqlen as u32;
        let (f, cfg) = self.row_kernel(c, backward_kernel(c.dtype))?;
        // SAFETY: one block per row of `probs` and `dprobs`, which hold `rows · cols` elements
        // each; the kernel allows its output to alias `dp`.
        unsafe {
            self.stream.launch_builder(&f).arg(&b.probs).arg(&b.dprobs).arg(&b.dprobs).arg(&cols).launch(cfg)
        }
        .map_err(|e| e.to_string())?;
        // Row-major dV = Pᵀ dO is column-major dVᵀ = dOᵀ P (P is column-major Pᵀ: transposed).
        self.gemm(
            c,
            Gemm {
                transa: N,
                transb: T,
                m: d,
                n: s,
                k: s,
                alpha: 1.0,
                a: (b.dout, d, sd),
                b: (b.probs, s, ss),
                c: (b.dv, d, sd),
            },
        )?;
        // Row-major dQ = scale · dS K is column-major dQᵀ = scale · Kᵀ dSᵀ.
        self.gemm(
            c,
            Gemm {
                transa: N,
                transb: N,
                m: d,
                n: s,
                k: s,
                alpha: scale,
                a: (b.k, d, sd),
                b: (b.dprobs, s, ss),
                c: (b.dq, d, sd),
            },
        )?;
        // Row-major dK = scale · dSᵀ Q is column-major dKᵀ = scale · Qᵀ dS.
        self.gemm(
            c,
            Gemm {
                transa: N,
                transb: T,
                m: d,
                n: s,
                k: s,
                alpha: scale,
                a: (b.q, d, sd),
                b: (b.dprobs, s, ss),
                c: (b.dk, d, sd),
            },
        )
    }
}
