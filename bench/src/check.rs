//! Comparing outputs: max |a − b| / max |b| over whole tensors of 16-bit bits, spread over the
//! CPU's cores (a gradient check reads three 33.5M-element tensors of each implementation).

use crate::cases::Dtype;
use half::{bf16, f16};

/// Every 16-bit pattern of `dtype` as f32.
pub fn table(dtype: Dtype) -> Vec<f32> {
    (0..=u16::MAX)
        .map(|b| match dtype {
            Dtype::F16 => f16::from_bits(b).to_f32(),
            Dtype::Bf16 => bf16::from_bits(b).to_f32(),
        })
        .collect()
}

/// max |a − b| / max |b| (NaN if any difference is NaN), `a` and `b` as 16-bit patterns decoded
/// by `table`.
pub fn rel_diff_bits(a: &[u16], b: &[u16], table: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "compared tensors differ in length");
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(16);
    let chunk = a.len().div_ceil(threads).max(1 << 16);
    let parts: Vec<(f64, f64)> = std::thread::scope(|s| {
        let handles: Vec<_> = a
            .chunks(chunk)
            .zip(b.chunks(chunk))
            .map(|(a, b)| {
                s.spawn(move || {
                    let (mut err, mut mag) = (0.0f32, 0.0f32);
                    let mut nan = false;
                    for (&x, &y) in a.iter().zip(b) {
                        let (x, y) = (table[x as usize], table[y as usize]);
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
        let t = table(Dtype::F16);
        let bits = |xs: &[f32]| xs.iter().map(|&x| f16::from_f32(x).to_bits()).collect::<Vec<u16>>();
        let mut b = vec![0.5f32; 300_000];
        b[7] = -2.0;
        let mut a = b.clone();
        a[299_999] += 0.25;
        assert_eq!(rel_diff_bits(&bits(&a), &bits(&b), &t), 0.125);
        assert_eq!(rel_diff_bits(&bits(&b), &bits(&b), &t), 0.0);
        a[5] = f32::NAN;
        assert!(rel_diff_bits(&bits(&a), &bits(&b), &t).is_nan());
        let tb = table(Dtype::Bf16);
        let bb: Vec<u16> = [1.0f32, -4.0].iter().map(|&x| bf16::from_f32(x).to_bits()).collect();
        let ab: Vec<u16> = [1.5f32, -4.0].iter().map(|&x| bf16::from_f32(x).to_bits()).collect();
        assert_eq!(rel_diff_bits(&ab, &bb, &tb), 0.125);
        assert_eq!(rel_diff([1.0, 3.0].into_iter(), [1.0, 2.0].into_iter()), 0.5);
        assert!(worst([0.1, f64::NAN, 0.2]).is_nan());
        assert_eq!(worst([0.1, 0.3, 0.2]), 0.3);
    }
}
