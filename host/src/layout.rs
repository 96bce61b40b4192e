//! Attention's problem shape and the strided layout of its 4-D tensors.

/// The sizes of one attention call. Q and O are `(batch, seqlen_q, heads_q, headdim)`; K and V
/// are `(batch, seqlen_k, heads_kv, headdim)`; LSE is `(batch, heads_q, seqlen_q)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionShape {
    pub batch: usize,
    pub seqlen_q: usize,
    pub seqlen_k: usize,
    pub heads_q: usize,
    /// Divides `heads_q`: each K/V head serves `heads_q / heads_kv` query heads (GQA, MQA).
    pub heads_kv: usize,
    pub headdim: usize,
}

impl AttentionShape {
    pub fn q_shape(&self) -> [usize; 4] {
        [self.batch, self.seqlen_q, self.heads_q, self.headdim]
    }
    pub fn kv_shape(&self) -> [usize; 4] {
        [self.batch, self.seqlen_k, self.heads_kv, self.headdim]
    }
    /// Query heads per K/V head.
    pub fn group_size(&self) -> usize {
        self.heads_q / self.heads_kv.max(1)
    }
    /// With causal masking aligned to the bottom right, query `i` sees keys `0..=i + sk - sq`:
    /// the number of keys row `i` sees (0 for a fully masked row).
    pub fn visible_keys(&self, i: usize, causal: bool) -> usize {
        if !causal {
            return self.seqlen_k;
        }
        (i + self.seqlen_k + 1).saturating_sub(self.seqlen_q).min(self.seqlen_k)
    }
}

/// Where element `(b, s, h, d)` of a 4-D tensor lives: `offset = Σ index · stride`, in elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout4 {
    pub shape: [usize; 4],
    pub strides: [usize; 4],
}

impl Layout4 {
    /// Row-major (contiguous) layout of `shape`.
    pub fn contiguous(shape: [usize; 4]) -> Self {
        let strides = [shape[1] * shape[2] * shape[3], shape[2] * shape[3], shape[3], 1];
        Layout4 { shape, strides }
    }

    pub fn offset(&self, idx: [usize; 4]) -> usize {
        idx.iter().zip(&self.strides).map(|(i, s)| i * s).sum()
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Elements a buffer must hold: one past the largest offset (0 for an empty tensor).
    pub fn required_len(&self) -> usize {
        if self.shape.contains(&0) {
            return 0;
        }
        self.shape.iter().zip(&self.strides).map(|(n, s)| (n - 1) * s).sum::<usize>() + 1
    }
}

/// A host tensor: a slice viewed through a layout.
#[derive(Clone, Copy, Debug)]
pub struct HostView<'a, T> {
    pub data: &'a [T],
    pub layout: Layout4,
}

impl<'a, T: Copy> HostView<'a, T> {
    /// A contiguous view; `None` when `data` is too short for `shape`.
    pub fn contiguous(data: &'a [T], shape: [usize; 4]) -> Option<Self> {
        let layout = Layout4::contiguous(shape);
        (data.len() >= layout.required_len()).then_some(HostView { data, layout })
    }

    pub fn at(&self, idx: [usize; 4]) -> T {
        self.data[self.layout.offset(idx)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causal_alignment_is_bottom_right() {
        let s = AttentionShape { batch: 1, seqlen_q: 5, seqlen_k: 2, heads_q: 1, heads_kv: 1, headdim: 1 };
        let visible: Vec<usize> = (0..5).map(|i| s.visible_keys(i, true)).collect();
        assert_eq!(visible, [0, 0, 0, 1, 2]);
        let s = AttentionShape { seqlen_q: 2, seqlen_k: 5, ..s };
        assert_eq!([s.visible_keys(0, true), s.visible_keys(1, true)], [4, 5]);
    }

    #[test]
    fn required_len_follows_strides() {
        let l = Layout4 { shape: [2, 3, 4, 8], strides: [3 * 3 * 4 * 8, 3 * 4 * 8, 8, 1] };
        assert_eq!(l.required_len(), 3 * 3 * 4 * 8 + 2 * 3 * 4 * 8 + 3 * 8 + 8);
    }
}
