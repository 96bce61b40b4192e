//! Attention's problem shape and the strided layouts of its tensors.

/// The sizes of one attention call. Q and O are `(batch, seqlen_q, heads_q, headdim)`; K and V
/// are `(batch, seqlen_k, heads_kv, headdim)`; LSE is `(batch, heads_q, seqlen_q)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionShape {
    /// The number of independent sequences.
    pub batch: usize,
    /// Query positions per sequence: the rows of Q and O.
    pub seqlen_q: usize,
    /// Key and value positions per sequence: the rows of K and V.
    pub seqlen_k: usize,
    /// Query heads, also the heads of O and the LSE.
    pub heads_q: usize,
    /// Divides `heads_q`: each K/V head serves `heads_q / heads_kv` query heads (GQA, MQA).
    pub heads_kv: usize,
    /// Elements per head of Q, K, V and O.
    pub headdim: usize,
}

impl AttentionShape {
    /// The shape of Q and O, `(batch, seqlen_q, heads_q, headdim)`.
    pub fn q_shape(&self) -> [usize; 4] {
        [self.batch, self.seqlen_q, self.heads_q, self.headdim]
    }
    /// The shape of K and V, `(batch, seqlen_k, heads_kv, headdim)`.
    pub fn kv_shape(&self) -> [usize; 4] {
        [self.batch, self.seqlen_k, self.heads_kv, self.headdim]
    }
    /// The shape of the log-sum-exp, `(batch, heads_q, seqlen_q)`.
    pub fn lse_shape(&self) -> [usize; 3] {
        [self.batch, self.heads_q, self.seqlen_q]
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
        i.saturating_add(self.seqlen_k).saturating_add(1).saturating_sub(self.seqlen_q).min(self.seqlen_k)
    }
}

/// Where element `idx` of an `N`-dimensional tensor lives: `offset = Σ idx[i] · strides[i]`, in
/// elements. Strides are unsigned, so element `(0, .., 0)` is the lowest addressed; the stride of
/// a dimension of size 1 is never multiplied by anything but 0 and may be any value.
///
/// Any values may be stored; they are checked where they are used ([`crate::FlashAttention::forward`]
/// rejects a layout whose offsets overflow, leave the buffer or, for outputs, overlap).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Layout<const N: usize> {
    /// The size of each dimension.
    pub shape: [usize; N],
    /// Per dimension, the distance in elements between consecutive indices.
    pub strides: [usize; N],
}

/// The layout of Q, K, V and O: `(batch, seqlen, heads, headdim)`.
pub type Layout4 = Layout<4>;
/// The layout of the log-sum-exp: `(batch, heads_q, seqlen_q)`.
pub type Layout3 = Layout<3>;

impl<const N: usize> Layout<N> {
    /// Row-major (contiguous) layout of `shape`. A stride whose true value exceeds `usize::MAX`
    /// saturates there (such a layout addresses more than `usize::MAX` elements as soon as the
    /// dimension it belongs to has size 2, and is rejected where it is used).
    pub fn contiguous(shape: [usize; N]) -> Self {
        let mut strides = [1usize; N];
        let mut acc = 1usize;
        for i in (0..N).rev() {
            strides[i] = acc;
            acc = acc.saturating_mul(shape[i]);
        }
        Layout { shape, strides }
    }

    /// The offset of `idx` in elements, `Σ idx[i] · strides[i]`, saturating at `usize::MAX`
    /// (an offset no slice holds, so indexing with it fails rather than wrapping to another
    /// element). [`Layout::checked_offset`] also checks `idx` against the shape.
    pub fn offset(&self, idx: [usize; N]) -> usize {
        idx.iter().zip(&self.strides).fold(0usize, |acc, (&i, &s)| acc.saturating_add(i.saturating_mul(s)))
    }

    /// The offset of `idx` in elements; `None` when an index is out of its dimension or the
    /// offset overflows `usize`.
    pub fn checked_offset(&self, idx: [usize; N]) -> Option<usize> {
        let mut offset = 0usize;
        for ((&i, &n), &s) in idx.iter().zip(&self.shape).zip(&self.strides) {
            if i >= n {
                return None;
            }
            offset = offset.checked_add(i.checked_mul(s)?)?;
        }
        Some(offset)
    }

    /// The number of elements; `None` when it overflows `usize`.
    pub fn numel(&self) -> Option<usize> {
        self.shape.iter().try_fold(1usize, |acc, &n| acc.checked_mul(n))
    }

    /// Whether the tensor has no elements (a size is 0).
    pub fn is_empty(&self) -> bool {
        self.shape.contains(&0)
    }

    /// The largest offset of any element, `Σ (shape[i] − 1) · strides[i]` over dimensions of size
    /// at least 2; `None` for an empty tensor or when it overflows `usize`.
    pub fn max_offset(&self) -> Option<usize> {
        if self.is_empty() {
            return None;
        }
        self.shape
            .iter()
            .zip(&self.strides)
            .filter(|(n, _)| **n > 1)
            .try_fold(0usize, |acc, (&n, &s)| acc.checked_add((n - 1).checked_mul(s)?))
    }

    /// Elements a buffer must hold: one past the largest offset, 0 for an empty tensor; `None`
    /// when that overflows `usize`.
    pub fn required_len(&self) -> Option<usize> {
        if self.is_empty() {
            return Some(0);
        }
        self.max_offset()?.checked_add(1)
    }
}

/// A host tensor: a slice viewed through a layout.
#[derive(Clone, Copy, Debug)]
pub struct HostView<'a, T> {
    /// The elements; element `(0, 0, 0, 0)` is `data[0]`.
    pub data: &'a [T],
    /// Shape `(batch, seqlen, heads, headdim)` and strides, in elements, into `data`.
    pub layout: Layout4,
}

impl<'a, T: Copy> HostView<'a, T> {
    /// A contiguous view; `None` when `data` is too short for `shape`.
    pub fn contiguous(data: &'a [T], shape: [usize; 4]) -> Option<Self> {
        let layout = Layout4::contiguous(shape);
        (data.len() >= layout.required_len()?).then_some(HostView { data, layout })
    }

    /// Element `idx`, or `None` when `idx` is outside the shape or its offset outside `data`.
    pub fn get(&self, idx: [usize; 4]) -> Option<T> {
        self.data.get(self.layout.checked_offset(idx)?).copied()
    }

    /// Element `idx`.
    ///
    /// # Panics
    /// When `idx` is outside the shape or its offset outside `data`, as slice indexing does
    /// ([`HostView::get`] returns `None` instead).
    pub fn at(&self, idx: [usize; 4]) -> T {
        match self.get(idx) {
            Some(x) => x,
            None => panic!(
                "index {idx:?} outside the host view (shape {:?}, strides {:?}, {} elements)",
                self.layout.shape,
                self.layout.strides,
                self.data.len()
            ),
        }
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
        assert_eq!(l.required_len(), Some(3 * 3 * 4 * 8 + 2 * 3 * 4 * 8 + 3 * 8 + 8));
        // A dimension of size 1 ignores its stride; an empty tensor needs nothing.
        let l = Layout { shape: [1, 3], strides: [usize::MAX, 2] };
        assert_eq!(l.required_len(), Some(5));
        assert_eq!(Layout { shape: [0, 3], strides: [usize::MAX, usize::MAX] }.required_len(), Some(0));
        // Overflow is `None`, never a wrapped length.
        assert_eq!(Layout { shape: [2, 3], strides: [usize::MAX, 1] }.required_len(), None);
        assert_eq!(Layout { shape: [3, 1], strides: [usize::MAX / 2 + 1, 1] }.max_offset(), None);
    }

    #[test]
    fn contiguous_strides_saturate() {
        assert_eq!(Layout::contiguous([2, 3, 4]).strides, [12, 4, 1]);
        let huge = Layout::contiguous([2, usize::MAX, 2]);
        assert_eq!(huge.strides, [usize::MAX, 2, 1]);
        assert_eq!(huge.required_len(), None);
        assert_eq!(Layout::<0>::contiguous([]).numel(), Some(1));
    }

    #[test]
    fn offsets_are_checked() {
        let l = Layout { shape: [2, 3], strides: [usize::MAX, 1] };
        assert_eq!(l.checked_offset([0, 2]), Some(2));
        assert_eq!(l.checked_offset([1, 1]), None);
        assert_eq!(l.checked_offset([0, 3]), None);
        assert_eq!(l.offset([1, 1]), usize::MAX);
        let v = HostView { data: &[1, 2, 3][..], layout: Layout4::contiguous([1, 1, 1, 4]) };
        assert_eq!(v.get([0, 0, 0, 2]), Some(3));
        assert_eq!(v.get([0, 0, 0, 3]), None);
    }
}
