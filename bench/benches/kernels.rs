//! Criterion micro-benchmarks of single kernels (`cargo bench -p rustflash-bench`): the forward
//! kernel at a few shapes, synchronised per iteration. Without a GPU they say so and measure nothing.

use criterion::{Criterion, criterion_group, criterion_main};
use half::f16;
use rustflash::{Device, DeviceTensor, DeviceTensorMut, FlashAttention, ForwardOptions};

fn forward(c: &mut Criterion) {
    let device = match Device::new(0) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("kernels bench skipped: {e}");
            return;
        }
    };
    let stream = device.new_stream().expect("stream");
    let fa = FlashAttention::new(device);
    for (b, s, h, d, causal) in [
        (8, 2048, 16, 128, false),
        (8, 2048, 16, 128, true),
        (4, 4096, 32, 64, false),
        (2, 8192, 8, 256, true),
    ] {
        let n = b * s * h * d;
        let q = stream.alloc_zeros::<f16>(n).expect("alloc");
        let mut o = stream.alloc_zeros::<f16>(n).expect("alloc");
        let mut lse = stream.alloc_zeros::<f32>(b * h * s).expect("alloc");
        let shape = [b, s, h, d];
        let opts = ForwardOptions::default().causal(causal);
        c.bench_function(
            &format!("forward f16 b{b} s{s} h{h} d{d}{}", if causal { " causal" } else { "" }),
            |bench| {
                bench.iter(|| {
                    let t = DeviceTensor::contiguous(q.slice(0..), shape);
                    let mut out = DeviceTensorMut::contiguous(o.slice_mut(0..), shape);
                    let mut lse = DeviceTensorMut::contiguous(lse.slice_mut(0..), [b, h, s]);
                    fa.forward(&stream, &t, &t, &t, &mut out, &mut lse, &opts).expect("forward");
                    stream.synchronize().expect("sync");
                })
            },
        );
    }
}

criterion_group!(benches, forward);
criterion_main!(benches);
