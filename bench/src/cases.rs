//! Which shapes a run measures: FlashAttention's benchmark (batch x seqlen = 16384, hidden 2048,
//! heads = 2048 / headdim), all of it (`--full`) or a quick slice, for the forward pass, the
//! backward pass and the two together.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    F16,
    Bf16,
    /// float32: rustflash in its default (accurate, 3xTF32) mode and, as `rustflash tf32`, in
    /// its TF32 mode; the PyTorch backends at full float32 precision.
    F32,
}

impl Dtype {
    pub fn name(self) -> &'static str {
        match self {
            Dtype::F16 => "f16",
            Dtype::Bf16 => "bf16",
            Dtype::F32 => "f32",
        }
    }

    /// Bytes per element.
    pub fn bytes(self) -> usize {
        match self {
            Dtype::F16 | Dtype::Bf16 => 2,
            Dtype::F32 => 4,
        }
    }
}

/// What one timed run does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Pass {
    /// O (and the LSE) from Q, K, V.
    Forward,
    /// dQ, dK, dV from Q, K, V, O, the LSE and dO (O and the LSE made beforehand, untimed).
    Backward,
    /// A forward pass, then the backward pass on its O and LSE, timed together.
    Both,
}

impl Pass {
    pub const ALL: [Pass; 3] = [Pass::Forward, Pass::Backward, Pass::Both];

    /// The name in tables, JSON (`"pass"`) and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Pass::Forward => "forward",
            Pass::Backward => "backward",
            Pass::Both => "forward+backward",
        }
    }

    /// `--pass` values: `forward`/`fwd`, `backward`/`bwd`, `both`/`forward+backward`/`fwd+bwd`.
    pub fn parse(s: &str) -> Option<Pass> {
        match s {
            "forward" | "fwd" => Some(Pass::Forward),
            "backward" | "bwd" => Some(Pass::Backward),
            "both" | "forward+backward" | "fwd+bwd" => Some(Pass::Both),
            _ => None,
        }
    }

    /// FLOPs of the pass over the forward's (FlashAttention's convention): the backward does
    /// five matrix products to the forward's two.
    pub fn flop_factor(self) -> f64 {
        match self {
            Pass::Forward => 1.0,
            Pass::Backward => 2.5,
            Pass::Both => 3.5,
        }
    }

    pub fn has_backward(self) -> bool {
        self != Pass::Forward
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Case {
    pub pass: Pass,
    pub dtype: Dtype,
    pub batch: usize,
    pub seqlen: usize,
    pub heads: usize,
    pub headdim: usize,
    pub causal: bool,
}

/// Elements of each of q, k, v, o (and dO, dQ, dK, dV): the same for every case (16384 x 2048).
pub const ELEMENTS: usize = 16384 * 2048;

impl Case {
    /// FlashAttention's count: `4 · B · S² · H · D`, halved when causal.
    pub fn forward_flops(&self) -> f64 {
        4.0 * (self.batch * self.seqlen * self.seqlen * self.heads * self.headdim) as f64
            / if self.causal { 2.0 } else { 1.0 }
    }

    /// The pass's FLOPs: the forward's times [`Pass::flop_factor`].
    pub fn flops(&self) -> f64 {
        self.forward_flops() * self.pass.flop_factor()
    }

    /// The benchmark's `(batch, heads, seqlen, headdim)` memory seen through rustflash's
    /// `(batch, seqlen, heads, headdim)` indexing.
    pub fn layout(&self) -> rustflash::layout::Layout4 {
        let (s, h, d) = (self.seqlen, self.heads, self.headdim);
        rustflash::layout::Layout4 { shape: [self.batch, s, h, d], strides: [h * s * d, d, s * d, 1] }
    }

    /// `f16 d128 s4096 causal`.
    pub fn label(&self) -> String {
        format!(
            "{} d{} s{}{}",
            self.dtype.name(),
            self.headdim,
            self.seqlen,
            if self.causal { " causal" } else { "" }
        )
    }
}

pub struct Selection {
    pub full: bool,
    pub headdims: Vec<usize>,
    pub seqlens: Vec<usize>,
    pub causal: Vec<bool>,
    pub dtypes: Vec<Dtype>,
    /// Empty: every pass.
    pub passes: Vec<Pass>,
}

/// Sequence lengths of `--full`, every pass (512 is left out to fit the whole run, three passes,
/// in one 10-minute GPU session; `--seqlen 512` measures it).
const FULL_SEQLENS: [usize; 5] = [1024, 2048, 4096, 8192, 16384];

/// The cases, shape by shape; the passes of one shape follow each other (forward, backward,
/// forward+backward), so a shape's inputs and the PyTorch peer's tensors are set up once.
pub fn list(sel: &Selection) -> Vec<Case> {
    let (headdims, seqlens, dtypes): (&[usize], &[usize], &[Dtype]) = if sel.full {
        (&[64, 128, 256], &FULL_SEQLENS, &[Dtype::F16, Dtype::Bf16])
    } else {
        (&[64, 128], &[1024, 4096], &[Dtype::F16])
    };
    let pick = |given: &[usize], all: &[usize]| if given.is_empty() { all.to_vec() } else { given.to_vec() };
    let mut passes = if sel.passes.is_empty() { Pass::ALL.to_vec() } else { sel.passes.clone() };
    passes.sort();
    passes.dedup();
    let mut cases = Vec::new();
    for &dtype in if sel.dtypes.is_empty() { dtypes } else { &sel.dtypes } {
        for d in pick(&sel.headdims, headdims) {
            for s in pick(&sel.seqlens, seqlens) {
                for &causal in if sel.causal.is_empty() { &[false, true][..] } else { &sel.causal } {
                    for &pass in &passes {
                        cases.push(Case {
                            pass,
                            dtype,
                            batch: 16384 / s,
                            seqlen: s,
                            heads: 2048 / d,
                            headdim: d,
                            causal,
                        });
                    }
                }
            }
        }
    }
    cases
}

#[cfg(test)]
mod tests {
    use super::*;

    fn selection(full: bool) -> Selection {
        Selection { full, headdims: vec![], seqlens: vec![], causal: vec![], dtypes: vec![], passes: vec![] }
    }

    #[test]
    fn full_grid() {
        let cases = list(&selection(true));
        let count = |p: Pass| cases.iter().filter(|c| c.pass == p).count();
        // 2 dtypes x 3 head dims x 2 masks x 5 seqlens.
        assert_eq!(count(Pass::Forward), 60);
        assert_eq!(count(Pass::Backward), 60);
        assert_eq!(count(Pass::Both), 60);
        assert!(cases.iter().all(|c| c.batch * c.seqlen == 16384 && c.heads * c.headdim == 2048));
        assert!(cases.iter().all(|c| c.seqlen >= 1024));
        // Shape-major: the three passes of a shape are adjacent.
        let first: Vec<Pass> = cases.iter().skip(3).take(3).map(|c| c.pass).collect();
        assert_eq!(first, Pass::ALL);
    }

    #[test]
    fn quick_and_filters() {
        assert_eq!(list(&selection(false)).len(), 8 * 3);
        let mut sel = selection(true);
        sel.passes = vec![Pass::Both, Pass::Backward, Pass::Both];
        sel.seqlens = vec![512];
        sel.headdims = vec![128];
        let cases = list(&sel);
        assert_eq!(cases.len(), 2 * 2 * 2);
        assert_eq!(cases[0].pass, Pass::Backward);
        assert_eq!(cases[1].pass, Pass::Both);
    }

    #[test]
    fn flops() {
        let c = Case {
            pass: Pass::Both,
            dtype: Dtype::F16,
            batch: 4,
            seqlen: 4096,
            heads: 16,
            headdim: 128,
            causal: true,
        };
        assert_eq!(c.forward_flops(), 2.0 * (4 * 4096 * 4096 * 16 * 128usize) as f64);
        assert_eq!(c.flops(), 3.5 * c.forward_flops());
        assert_eq!(Pass::parse("bwd"), Some(Pass::Backward));
        assert_eq!(Pass::parse("forward+backward"), Some(Pass::Both));
        assert_eq!(Pass::parse("sideways"), None);
    }
}
