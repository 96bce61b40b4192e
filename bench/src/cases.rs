//! Which shapes a run measures: FlashAttention's benchmark (batch x seqlen = 16384, hidden 2048,
//! heads = 2048 / headdim), all of it (`--full`) or a quick slice.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    F16,
    Bf16,
}

impl Dtype {
    pub fn name(self) -> &'static str {
        match self {
            Dtype::F16 => "f16",
            Dtype::Bf16 => "bf16",
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Case {
    pub dtype: Dtype,
    pub batch: usize,
    pub seqlen: usize,
    pub heads: usize,
    pub headdim: usize,
    pub causal: bool,
}

/// Elements of each of q, k, v, o: the same for every case (16384 x 2048).
pub const ELEMENTS: usize = 16384 * 2048;

impl Case {
    /// FlashAttention's count: `4 · B · S² · H · D`, halved when causal.
    pub fn forward_flops(&self) -> f64 {
        4.0 * (self.batch * self.seqlen * self.seqlen * self.heads * self.headdim) as f64
            / if self.causal { 2.0 } else { 1.0 }
    }
}

pub struct Selection {
    pub full: bool,
    pub headdims: Vec<usize>,
    pub seqlens: Vec<usize>,
    pub causal: Vec<bool>,
    pub dtypes: Vec<Dtype>,
}

pub fn list(sel: &Selection) -> Vec<Case> {
    let (headdims, seqlens, dtypes): (&[usize], &[usize], &[Dtype]) = if sel.full {
        (&[64, 128, 256], &[512, 1024, 2048, 4096, 8192, 16384], &[Dtype::F16, Dtype::Bf16])
    } else {
        (&[64, 128], &[1024, 4096], &[Dtype::F16])
    };
    let pick = |given: &[usize], all: &[usize]| if given.is_empty() { all.to_vec() } else { given.to_vec() };
    let mut cases = Vec::new();
    for &dtype in if sel.dtypes.is_empty() { dtypes } else { &sel.dtypes } {
        for d in pick(&sel.headdims, headdims) {
            for s in pick(&sel.seqlens, seqlens) {
                for &causal in if sel.causal.is_empty() { &[false, true][..] } else { &sel.causal } {
                    cases.push(Case {
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
    cases
}
