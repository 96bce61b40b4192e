//! Comparing outputs: max |a − b| / max |b| over whole tensors of raw element bytes, spread over
//! the CPU's cores (a gradient check reads three 33.5M-element tensors of each implementation).

use crate::cases::Dtype;
use half::{bf16, f16};

/// Reads elements of one dtype from raw (little-endian) bytes as f32, exactly.
pub enum Decoder {
    /// Every 16-bit pattern of the dtype as f32.
    Table(Vec<f32>),
    F32,
}

impl Decoder {
    pub fn new(dtype: Dtype) -> Decoder {
        let table = |f: fn(u16) -> f32| Decoder::Table((0..=u16::MAX).map(f).collect());
        match dtype {
            Dtype::F16 => table(|b| f16::from_bits(b).to_f32()),
            Dtype::Bf16 => table(|b| bf16::from_bits(b).to_f32()),
            Dtype::F32 => Decoder::F32,
        }
    }

    /// Bytes per element.
    pub fn bytes(&self) -> usize {
        match self {
            Decoder::Table(_) => 2,
            Decoder::F32 => 4,
        }
    }

    /// The element whose bytes `b` (`self.bytes()` of them) are.
    #[inline]
    pub fn value(&self, b: &[u8]) -> f32 {
        match self {
            Decoder::Table(t) => t[u16::from_le_bytes([b[0], b[1]]) as usize],
            Decoder::F32 => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        }
    }
}

/// max |a − b| / max |b| (NaN if any difference is NaN), `a` and `b` raw element bytes read by
/// `decoder`.
pub fn rel_diff_bytes(a: &[u8], b: &[u8], decoder: &Decoder) -> f64 {
    assert_eq!(a.len(), b.len(), "compared tensors differ in length");
    let size = decoder.bytes();
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(16);
    let chunk = (a.len() / size).div_ceil(threads).max(1 << 16) * size;
    let parts: Vec<(f64, f64)> = std::thread::scope(|s| {
        let handles: Vec<_> = a
            .chunks(chunk)
            .zip(b.chunks(chunk))
            .map(|(a, b)| {
                s.spawn(move || {
                    let (mut err, mut mag) = (0.0f32, 0.0f32);
                    let mut nan = false;
                    for (x, y) in a.chunks_exact(size).zip(b.chunks_exact(size)) {
                        let (x, y) = (decoder.value(x), decoder.value(y));
                        let d = (x - y).abs();
                        nan |= d.is_nan();
                        err = err.max(d);
                        mag = mag.max(y.abs());
                    }
                    (if nan { f64::NAN } else { err as f64 }, mag as f64)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or((f64::NAN, 0.0))).collect()
    });
    let err =
        parts.iter().fold(0.0f64, |e, p| if p.0.is_nan() || e.is_nan() { f64::NAN } else { e.max(p.0) });
    let mag = parts.iter().fold(0.0f64, |m, p| m.max(p.1));
    err / mag.max(f64::MIN_POSITIVE)
}

/// max |a − b| / max |b| over f64 values.
pub fn rel_diff(a: impl Iterator<Item = f64>, b: impl Iterator<Item = f64>) -> f64 {
    let (mut err, mut mag) = (0.0f64, 0.0f64);
    for (x, y) in a.zip(b) {
        err = if (x - y).is_nan() || err.is_nan() { f64::NAN } else { err.max((x - y).abs()) };
        mag = mag.max(y.abs());
    }
    err / mag.max(f64::MIN_POSITIVE)
}

/// The largest of several relative errors (NaN wins).
pub fn worst(errors: impl IntoIterator<Item = f64>) -> f64 {
    errors.into_iter().fold(0.0, |w, e| if w.is_nan() || e.is_nan() { f64::NAN } else { w.max(e) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_differences() {
        let t = Decoder::new(Dtype::F16);
        let bytes = |xs: &[f32]| xs.iter().flat_map(|&x| f16::from_f32(x).to_le_bytes()).collect::<Vec<u8>>();
        let mut b = vec![0.5f32; 300_000];
        b[7] = -2.0;
        let mut a = b.clone();
        a[299_999] += 0.25;
        assert_eq!(rel_diff_bytes(&bytes(&a), &bytes(&b), &t), 0.125);
        assert_eq!(rel_diff_bytes(&bytes(&b), &bytes(&b), &t), 0.0);
        a[5] = f32::NAN;
        assert!(rel_diff_bytes(&bytes(&a), &bytes(&b), &t).is_nan());
        let tb = Decoder::new(Dtype::Bf16);
        let bb: Vec<u8> = [1.0f32, -4.0].iter().flat_map(|&x| bf16::from_f32(x).to_le_bytes()).collect();
        let ab: Vec<u8> = [1.5f32, -4.0].iter().flat_map(|&x| bf16::from_f32(x).to_le_bytes()).collect();
        assert_eq!(rel_diff_bytes(&ab, &bb, &tb), 0.125);
        let f = Decoder::new(Dtype::F32);
        let fb = |xs: &[f32]| xs.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        assert_eq!(rel_diff_bytes(&fb(&[1.0, 0.75]), &fb(&[1.0, 0.5]), &f), 0.25);
        assert_eq!(rel_diff([1.0, 3.0].into_iter(), [1.0, 2.0].into_iter()), 0.5);
        assert!(worst([0.1, f64::NAN, 0.2]).is_nan());
        assert_eq!(worst([0.1, 0.3, 0.2]), 0.3);
    }
}
