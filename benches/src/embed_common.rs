//! Inputs and flags shared by the embedding benchmarks.

use glimpse_embedder::DeviceChoice;

/// A deterministic 640x480 photo-like JPEG (quality 85), the size of a typical photo.
pub fn synthetic_jpeg(seed: u32) -> Vec<u8> {
    let (w, h) = (640u32, 480u32);
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        let fx = x as f32 / w as f32;
        let fy = y as f32 / h as f32;
        let s = seed as f32 * 0.37;
        image::Rgb([
            (127.5 + 127.5 * (fx * 9.0 + s).sin()) as u8,
            (127.5 + 127.5 * (fy * 7.0 - s).cos()) as u8,
            ((x * 3 + y * 5 + seed * 11) % 256) as u8,
        ])
    });
    let mut out = Vec::new();
    let mut enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85);
    enc.encode_image(&img).expect("encoding an in-memory image");
    out
}

/// The value after `--name` on the command line, if given.
pub fn flag_value(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// `--name N` as a number, or `default`; exits with a message on a malformed value.
pub fn flag_usize(name: &str, default: usize) -> usize {
    match flag_value(name) {
        None => default,
        Some(v) => v.parse().unwrap_or_else(|_| {
            eprintln!("{name} expects a whole number, got `{v}`");
            std::process::exit(2)
        }),
    }
}

/// `--device cpu|cuda|cuda-f32|auto` (default cpu); exits with a message on a bad value.
pub fn device_flag() -> (DeviceChoice, String) {
    let name = flag_value("--device").unwrap_or_else(|| "cpu".into());
    match name.parse() {
        Ok(d) => (d, name),
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2)
        }
    }
}
