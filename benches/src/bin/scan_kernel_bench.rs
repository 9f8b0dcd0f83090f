//! The 4-bit fast-scan kernels alone: every kernel this CPU can run
//! (scalar, AVX2, AVX-512) over the same packed codes and table, so their
//! speeds compare in one run without the rest of the search around them.
//! Prints ns per block of 32 codes and codes/s, with the ratio against the
//! scalar kernel (the baseline) and against AVX2, and checks that every
//! kernel returns the scalar kernel's sums.
//!
//! Usage: `scan_kernel_bench [--m 128] [--vectors 4096] [--passes 200]`
//! (4096 vectors of m = 128 are 256 KiB of codes: cache-resident, like one
//! query's probed lists; raise `--vectors` to measure streaming from memory).

use std::time::Instant;

use glimpse_index::fastscan::{BLOCK, block_bytes, lut_bytes};
use glimpse_index::{Kernels, SimdLevel};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut m = 128usize;
    let mut vectors = 4096usize;
    let mut passes = 200usize;
    for pair in argv.chunks(2) {
        let val = pair.get(1).ok_or("every option takes a value")?;
        match pair[0].as_str() {
            "--m" => m = val.parse()?,
            "--vectors" => vectors = val.parse()?,
            "--passes" => passes = val.parse()?,
            other => return Err(format!("unknown option {other}").into()),
        }
    }
    let blocks = vectors.div_ceil(BLOCK);
    let pairs = m.div_ceil(2);
    let bb = block_bytes(m);
    // Deterministic xorshift bytes: the kernels' speed does not depend on the values.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state as u8
    };
    let codes: Vec<u8> = (0..blocks * bb).map(|_| next()).collect();
    let mut lut: Vec<u8> = (0..lut_bytes(m)).map(|_| next() >> 2).collect();
    for r in 0..lut.len() / 32 {
        for j in 0..16 {
            lut[r * 32 + 16 + j] = lut[r * 32 + j];
        }
    }
    let thr = (m as u16) * 24;
    println!(
        "# scan_kernel_bench: m={m} ({pairs} pairs, {bb} bytes/block), {} vectors ({:.1} MiB of codes), {passes} passes; detected {:?}, in use {:?}",
        blocks * BLOCK,
        (blocks * bb) as f64 / (1 << 20) as f64,
        SimdLevel::detected(),
        glimpse_index::simd::level()
    );
    let reference = Kernels::of(SimdLevel::Scalar).ok_or("no scalar kernel")?;
    let mut want = vec![[0u16; BLOCK]; blocks];
    let mut want_masks = vec![0u32; blocks];
    for (b, (w, mask)) in want.iter_mut().zip(want_masks.iter_mut()).enumerate() {
        *mask = reference.scan_block(&codes[b * bb..(b + 1) * bb], &lut, pairs, thr, w);
    }
    println!(
        "| kernel | ns / block of 32 | M codes/s | vs scalar | vs AVX2 | same sums as scalar |"
    );
    println!("|---|---|---|---|---|---|");
    let mut scalar_ns = None;
    let mut avx2_ns = None;
    for level in SimdLevel::ALL {
        let Some(kernels) = Kernels::of(level) else {
            println!("| {} | not supported by this CPU | | | | |", level.name());
            continue;
        };
        let mut out = [0u16; BLOCK];
        let mut same = true;
        for b in 0..blocks {
            let mask = kernels.scan_block(&codes[b * bb..(b + 1) * bb], &lut, pairs, thr, &mut out);
            same &= out == want[b] && mask == want_masks[b];
        }
        let mut best = f64::INFINITY;
        let mut sink = 0u32;
        for _ in 0..passes {
            let t = Instant::now();
            for b in 0..blocks {
                sink ^=
                    kernels.scan_block(&codes[b * bb..(b + 1) * bb], &lut, pairs, thr, &mut out);
                sink ^= out[b % BLOCK] as u32;
            }
            best = best.min(t.elapsed().as_secs_f64());
        }
        std::hint::black_box(sink);
        let ns = best * 1e9 / blocks as f64;
        if level == SimdLevel::Scalar {
            scalar_ns = Some(ns);
        }
        if level == SimdLevel::Avx2 {
            avx2_ns = Some(ns);
        }
        let ratio = |base: Option<f64>| base.map_or("-".to_string(), |b| format!("{:.2}x", b / ns));
        println!(
            "| {} | {ns:.1} | {:.0} | {} | {} | {} |",
            level.name(),
            (BLOCK as f64) / ns * 1e3,
            ratio(scalar_ns),
            ratio(avx2_ns),
            if same { "yes" } else { "NO" }
        );
        if !same {
            return Err(format!("{} kernel differs from the scalar kernel", level.name()).into());
        }
    }
    Ok(())
}
