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

/// Why there is no naive attention for float32: its row kernels are 16-bit only.
pub const NO_F32: &str = "naive attention (cuBLAS around row kernels) runs float16 and bfloat16 only";

/// The row kernel of the backward, `dS = P ∘ (dP − rowsum(P ∘ dP))`, by element type.
pub fn backward_kernel(dtype: Dtype) -> Result<&'static str, String> {
    match dtype {
        Dtype::F16 => Ok("naive_softmax_backward_f16"),
        Dtype::Bf16 => Ok("naive_softmax_backward_bf16"),
        Dtype::F32 => Err(NO_F32.into()),
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

    fn gemm(&self, c: &Case, g: Gemm) -> Result<(), String> {
        let ty = match c.dtype {
            Dtype::F16 => cudaDataType::CUDA_R_16F,
            Dtype::Bf16 => cudaDataType::CUDA_R_16BF,
            Dtype::F32 => return Err(NO_F32.into()),
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
            Dtype::F32 => return Err(NO_F32.into()),
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
        self.backward_dp(c, b)?;
        self.backward_ds(c, b)?;
        self.backward_grads(c, b)
    }

    /// Row-major dP = dO Vᵀ is column-major dPᵀ = V dOᵀ.
    fn backward_dp(&self, c: &Case, b: &NaiveBackwardBuffers) -> Result<(), String> {
        let (s, d, sd, ss) = Self::dims(c);
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
        )
    }

    /// dS = P ∘ (dP − rowsum(P ∘ dP)), in place over dP.
    fn backward_ds(&self, c: &Case, b: &NaiveBackwardBuffers) -> Result<(), String> {
        let cols = c.seqlen as u32;
        let (f, cfg) = self.row_kernel(c, backward_kernel(c.dtype)?)?;
        // SAFETY: one block per row of `probs` and `dprobs`, which hold `rows · cols` elements
        // each; the kernel allows its output to alias `dp`.
        unsafe {
            self.stream.launch_builder(&f).arg(&b.probs).arg(&b.dprobs).arg(&b.dprobs).arg(&cols).launch(cfg)
        }
        .map(|_| ())
        .map_err(|e| e.to_string())
    }

    /// dV, dQ, dK from P and dS (in `dprobs`).
    fn backward_grads(&self, c: &Case, b: &NaiveBackwardBuffers) -> Result<(), String> {
        let (s, d, sd, ss) = Self::dims(c);
        let scale = 1.0 / (c.headdim as f32).sqrt();
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

#[cfg(test)]
mod tests {
    //! On a GPU only (ignored by default, with the reason): the products of the backward against
    //! the CPU, and the whole backward against the float64 reference.
    use super::*;
    use crate::cases::Pass;
    use cudarc::driver::{CudaSlice, DevicePtr};
    use half::f16;
    use rustflash::layout::{AttentionShape, HostView, Layout4};

    /// Row-major `a (m x k) · b (k x n)` with `b` given transposed when `bt`.
    fn matmul(a: &[f64], b: &[f64], m: usize, k: usize, n: usize, bt: bool) -> Vec<f64> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] =
                    (0..k).map(|l| a[i * k + l] * if bt { b[j * k + l] } else { b[l * n + j] }).sum();
            }
        }
        c
    }

    fn transpose(a: &[f64], rows: usize, cols: usize) -> Vec<f64> {
        (0..cols * rows).map(|x| a[(x % rows) * cols + x / rows]).collect()
    }

    fn rel(a: &[f64], b: &[f64]) -> f64 {
        crate::check::rel_diff(a.iter().copied(), b.iter().copied())
    }

    #[test]
    #[ignore = "needs a CUDA GPU: cargo test -p rustflash-bench -- --ignored, on a GPU host"]
    fn backward_on_the_gpu() {
        let device = Device::new(0).expect("a CUDA GPU");
        let stream = device.new_stream().unwrap();
        let naive = Naive::new(&device, &stream).unwrap();
        let (bs, h, s, d) = (2, 3, 96, 64);
        let c = Case {
            pass: Pass::Backward,
            dtype: Dtype::F16,
            batch: bs,
            seqlen: s,
            heads: h,
            headdim: d,
            causal: true,
        };
        let n = bs * h * s * d;
        let mut rng = 7u64;
        let host: Vec<f16> = (0..4 * n)
            .map(|_| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                f16::from_f32(((rng >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 3.4)
            })
            .collect();
        let x = stream.clone_htod(&host).unwrap();
        let buf = |len: usize| stream.alloc_zeros::<f16>(len).unwrap();
        let (p, dp, out, dq, dk, dv) =
            (buf(bs * h * s * s), buf(bs * h * s * s), buf(n), buf(n), buf(n), buf(n));
        let ptr = |b: &CudaSlice<f16>| b.device_ptr(&stream).0;
        let part = |i: usize| x.slice(i * n..(i + 1) * n).device_ptr(&stream).0;
        naive
            .forward(
                &c,
                &NaiveBuffers { q: part(0), k: part(1), v: part(2), scores: ptr(&p), out: ptr(&out) },
            )
            .unwrap();
        let bufs = NaiveBackwardBuffers {
            q: part(0),
            k: part(1),
            v: part(2),
            dout: part(3),
            probs: ptr(&p),
            dprobs: ptr(&dp),
            dq: ptr(&dq),
            dk: ptr(&dk),
            dv: ptr(&dv),
        };
        let get =
            |b: &CudaSlice<f16>| stream.clone_dtoh(b).unwrap().iter().map(|x| x.to_f64()).collect::<Vec<_>>();
        let input: Vec<f64> = host.iter().map(|x| x.to_f64()).collect();
        let scale = 1.0 / (d as f64).sqrt();

        // The products, with the row kernel skipped (dS := dP): every (batch, head) matrix.
        naive.backward_dp(&c, &bufs).unwrap();
        naive.backward_grads(&c, &bufs).unwrap();
        let (pg, dpg, dqg, dkg, dvg) = (get(&p), get(&dp), get(&dq), get(&dk), get(&dv));
        let mut worst = 0.0f64;
        for m in 0..bs * h {
            let t = |i: usize| &input[i * n + m * s * d..i * n + (m + 1) * s * d];
            let (q, k, v, dout) = (t(0), t(1), t(2), t(3));
            let (pm, dpm) = (&pg[m * s * s..(m + 1) * s * s], &dpg[m * s * s..(m + 1) * s * s]);
            let mat = |g: &[f64]| g[m * s * d..(m + 1) * s * d].to_vec();
            worst = worst.max(rel(dpm, &matmul(dout, v, s, d, s, true)));
            worst = worst.max(rel(&mat(&dvg), &matmul(&transpose(pm, s, s), dout, s, s, d, false)));
            let dq_ref: Vec<f64> = matmul(dpm, k, s, s, d, false).iter().map(|x| x * scale).collect();
            let dk_ref: Vec<f64> =
                matmul(&transpose(dpm, s, s), q, s, s, d, false).iter().map(|x| x * scale).collect();
            worst = worst.max(rel(&mat(&dqg), &dq_ref)).max(rel(&mat(&dkg), &dk_ref));
        }
        assert!(worst < 2e-3, "naive backward products: relative error {worst}");

        // The whole backward against the float64 reference.
        naive.backward(&c, &bufs).unwrap();
        let bhsd = Layout4 { shape: [bs, s, h, d], strides: [h * s * d, d, s * d, 1] };
        let view = |i: usize| HostView { data: &host[i * n..(i + 1) * n], layout: bhsd };
        let att = rustflash_reference::Attention {
            shape: AttentionShape {
                batch: bs,
                seqlen_q: s,
                seqlen_k: s,
                heads_q: h,
                heads_kv: h,
                headdim: d,
            },
            softmax_scale: scale,
            causal: true,
        };
        let r = att.backward(&view(0), &view(1), &view(2), &view(3)).unwrap();
        // The reference's gradients are (batch, seqlen, heads, headdim); ours (batch, heads, seqlen, headdim).
        let to_bshd = |g: &[f64]| {
            let mut o = vec![0.0; n];
            for (bi, si, hi) in (0..bs).flat_map(|b| (0..s).flat_map(move |s| (0..h).map(move |h| (b, s, h))))
            {
                let from = ((bi * h + hi) * s + si) * d;
                let to = ((bi * s + si) * h + hi) * d;
                o[to..to + d].copy_from_slice(&g[from..from + d]);
            }
            o
        };
        for (name, got, want) in [("dq", &dq, &r.dq), ("dk", &dk, &r.dk), ("dv", &dv, &r.dv)] {
            let e = rel(&to_bshd(&get(got)), want);
            assert!(e < 1e-2, "naive backward {name}: relative error {e} against the float64 reference");
        }
    }
}
