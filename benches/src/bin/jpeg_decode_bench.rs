//! JPEG decoding speed: Glimpse's decoder (libjpeg-turbo, as Pillow uses, with its SIMD
//! kernels) against the `image` crate's (zune-jpeg), the baseline, in the same run, on 32
//! synthetic 640×480 q85 photos-like JPEGs, one thread.
//!
//! Run: `cargo run --release -p glimpse-benches --bin jpeg_decode_bench`

use std::time::Instant;

use glimpse_benches::embed_common::synthetic_jpeg;

fn per_image_ms(jpegs: &[Vec<u8>], rounds: usize, decode: impl Fn(&[u8])) -> f64 {
    for j in jpegs {
        decode(j);
    }
    let t = Instant::now();
    for _ in 0..rounds {
        for j in jpegs {
            decode(j);
        }
    }
    t.elapsed().as_secs_f64() * 1e3 / (rounds * jpegs.len()) as f64
}

fn main() {
    let jpegs: Vec<Vec<u8>> = (0..32).map(synthetic_jpeg).collect();
    let rounds = 10;
    let ours = per_image_ms(&jpegs, rounds, |j| {
        std::hint::black_box(glimpse_embedder::image::decode_rgb(j).expect("decode"));
    });
    let zune = per_image_ms(&jpegs, rounds, |j| {
        std::hint::black_box(image::load_from_memory(j).expect("decode").to_rgb8());
    });
    println!(
        "# JPEG decode to RGB8, 640x480 q85, 1 thread, {} images x {rounds}",
        jpegs.len()
    );
    println!("| decoder | ms/image | images/s | vs image crate |");
    println!("|---|---|---|---|");
    println!(
        "| libjpeg-turbo (Glimpse, bit-exact with Pillow) | {ours:.3} | {:.0} | {:.2}x |",
        1e3 / ours,
        zune / ours
    );
    println!(
        "| image crate / zune-jpeg (baseline) | {zune:.3} | {:.0} | 1.00x |",
        1e3 / zune
    );
}
