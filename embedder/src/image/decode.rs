//! Decoding to RGB8 as transformers' `convert_to_rgb` does with PIL: images with transparency
//! are alpha-composited onto opaque white with Pillow's integer arithmetic (`AlphaMode::
//! CompositeWhite`, the reference), or have alpha dropped like a bare `convert("RGB")`
//! (`AlphaMode::Drop`, OpenAI's original preprocessing); grey and palettes are expanded,
//! 16-bit samples reduced to their high byte, animations give their first frame, EXIF
//! orientation is ignored (CLIPImageProcessor ignores it too).

use std::io::Cursor;
use std::os::raw::c_int;

use image::{DynamicImage, ImageFormat, ImageReader, Limits};

use super::resize::Rgb8;
use crate::error::ImageError;

/// Largest accepted side, a guard against decompression bombs.
pub const MAX_SIDE: u32 = 16_384;

/// Largest decoded RGB8 image in bytes (the `image` crate's default allocation limit): a
/// 16384 x 16384 JPEG of a few kilobytes would otherwise take 768 MiB.
pub const MAX_DECODED_BYTES: usize = 512 << 20;

/// What happens to transparency when converting to RGB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AlphaMode {
    /// Composite onto opaque white (transformers' `convert_to_rgb`; the reference).
    #[default]
    CompositeWhite,
    /// Drop the alpha channel (`PIL.Image.convert("RGB")`, OpenAI's `clip` package).
    Drop,
}

/// Pillow's `alpha_composite` of `(v, a)` over opaque white, for one channel
/// (`libImaging/AlphaComposite.c`, 7 extra bits of precision, rounded divisions by 255).
fn over_white(v: u8, a: u8) -> u8 {
    if a == 0 {
        return 255;
    }
    const P: u32 = 7;
    let (v, a) = (u32::from(v), u32::from(a));
    let outa255 = a * 255 + 255 * (255 - a);
    let coef1 = a * 255 * 255 * (1 << P) / outa255;
    let coef2 = 255 * (1 << P) - coef1;
    let t = v * coef1 + 255 * coef2 + (0x80 << P);
    ((((t >> 8) + t) >> 8) >> P) as u8
}

/// Decodes JPEG, PNG, WebP or GIF bytes into RGB8, compositing transparency onto white.
pub fn decode_rgb(bytes: &[u8]) -> Result<Rgb8, ImageError> {
    decode_rgb_with(bytes, AlphaMode::CompositeWhite)
}

/// Decodes JPEG, PNG, WebP or GIF bytes into RGB8 with the given alpha handling.
pub fn decode_rgb_with(bytes: &[u8], alpha: AlphaMode) -> Result<Rgb8, ImageError> {
    let format = image::guess_format(bytes).map_err(|_| ImageError::UnsupportedFormat)?;
    if !matches!(
        format,
        ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::WebP | ImageFormat::Gif
    ) {
        return Err(ImageError::UnsupportedFormat);
    }
    if format == ImageFormat::Jpeg
        && let Some(decoded) = decode_jpeg_like_pillow(bytes)
    {
        return decoded;
    }
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    reader.limits(limits);
    let img = reader
        .decode()
        .map_err(|e| ImageError::Decode(e.to_string()))?;
    if img.width() == 0 || img.height() == 0 {
        return Err(ImageError::Invalid("zero-sized image".into()));
    }
    Ok(to_rgb8(img, alpha))
}

/// JPEG through libjpeg-turbo's decoder (vendored by `mozjpeg-sys`, built without assembly),
/// the decoder Pillow ships: the same integer IDCT (`JDCT_ISLOW`), fancy chroma upsampling and
/// fixed-point YCbCr conversion, so the pixels equal PIL's bit for bit. The `image` crate's
/// decoder rounds differently (±1 on many pixels, ~5e-3 on the embedding).
///
/// A file truncated inside its scan data is refused, as Pillow refuses it ("image file is
/// truncated"): libjpeg would fill the missing rows with grey and only warn, so the warning is
/// caught (see [`jpeg_error_mgr`]). Truncated headers are errors too.
///
/// `None` for the colour spaces libjpeg cannot turn into RGB (CMYK, YCCK), which the caller
/// decodes with the `image` crate instead. libjpeg reports fatal errors by unwinding (the
/// wrapper's error handler resumes a panic payload without the panic hook), caught here.
fn decode_jpeg_like_pillow(bytes: &[u8]) -> Option<Result<Rgb8, ImageError>> {
    use mozjpeg::ColorSpace;
    let attempt = std::panic::catch_unwind(|| -> Result<Option<Rgb8>, ImageError> {
        let io = |e: std::io::Error| ImageError::Decode(format!("JPEG: {e}"));
        PREMATURE_EOF.set(false);
        let jpeg = mozjpeg::Decompress::builder()
            .with_err(jpeg_error_mgr())
            .from_mem(bytes)
            .map_err(io)?;
        if matches!(
            jpeg.color_space(),
            ColorSpace::JCS_CMYK | ColorSpace::JCS_YCCK
        ) {
            return Ok(None);
        }
        let (width, height) = jpeg.size();
        if width == 0 || height == 0 {
            return Err(ImageError::Invalid("zero-sized image".into()));
        }
        let max = MAX_SIDE as usize;
        if width > max || height > max {
            return Err(ImageError::Decode(format!(
                "{width}x{height} exceeds the {max}-pixel side limit"
            )));
        }
        if width * height * 3 > MAX_DECODED_BYTES {
            return Err(ImageError::Decode(format!(
                "{width}x{height} decodes to more than {MAX_DECODED_BYTES} bytes"
            )));
        }
        let mut started = jpeg.rgb().map_err(io)?;
        let data: Vec<u8> = started.read_scanlines::<u8>().map_err(io)?;
        if PREMATURE_EOF.get() {
            return Err(ImageError::Decode(
                "JPEG: image file is truncated (premature end of the scan data)".into(),
            ));
        }
        started.finish().map_err(io)?;
        if data.len() != width * height * 3 {
            return Err(ImageError::Decode("JPEG: truncated scanlines".into()));
        }
        Ok(Some(Rgb8 {
            width,
            height,
            data,
        }))
    });
    match attempt {
        Ok(Ok(Some(rgb))) => Some(Ok(rgb)),
        Ok(Ok(None)) => None,
        Ok(Err(e)) => Some(Err(e)),
        Err(payload) => {
            let message = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_string()))
                .unwrap_or_else(|| "libjpeg error".into());
            Some(Err(ImageError::Decode(message)))
        }
    }
}

thread_local! {
    /// Set by [`note_warning`] when libjpeg warns that the data ended early; a decode runs on
    /// one thread from start to end, so a thread-local carries it out of the C callback.
    static PREMATURE_EOF: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// libjpeg's standard error manager with mozjpeg's behaviour for fatal errors (unwind with
/// the formatted message) and one change: warnings are noted instead of silenced.
fn jpeg_error_mgr() -> mozjpeg_sys::jpeg_error_mgr {
    // SAFETY: `jpeg_error_mgr` is a plain C struct of numbers and function pointers, for which
    // all-zero is a valid value; `jpeg_std_error` then fills in every field.
    let mut err: mozjpeg_sys::jpeg_error_mgr = unsafe { std::mem::zeroed() };
    // SAFETY: `err` is a valid, exclusively borrowed error manager.
    unsafe { mozjpeg_sys::jpeg_std_error(&mut err) };
    err.error_exit = Some(unwind_error_exit);
    err.emit_message = Some(note_warning);
    err
}

/// libjpeg's `emit_message`: level -1 is a warning; only a premature end of data matters here.
extern "C-unwind" fn note_warning(cinfo: &mut mozjpeg_sys::jpeg_common_struct, level: c_int) {
    if level >= 0 {
        return;
    }
    // SAFETY: libjpeg calls this with `cinfo.err` pointing at the manager installed above.
    let code = unsafe { cinfo.err.as_ref() }.map_or(0, |e| e.msg_code);
    if code == mozjpeg_sys::JWRN_JPEG_EOF as c_int {
        PREMATURE_EOF.set(true);
    }
}

/// libjpeg's `error_exit`: unwinds with the formatted message (caught by `catch_unwind` in
/// [`decode_jpeg_like_pillow`]; `resume_unwind` skips the panic hook, as mozjpeg's own does).
extern "C-unwind" fn unwind_error_exit(cinfo: &mut mozjpeg_sys::jpeg_common_struct) {
    let buffer = [0u8; 80];
    // SAFETY: `cinfo.err` is the manager installed above, whose `format_message` libjpeg set
    // (`jpeg_std_error`); it writes at most 80 bytes, NUL-terminated, into `buffer`.
    let message = unsafe {
        match cinfo.err.as_ref().and_then(|e| e.format_message) {
            Some(format) => {
                format(cinfo, &buffer);
                let text = buffer.split(|&c| c == 0).next().unwrap_or_default();
                String::from_utf8_lossy(text).into_owned()
            }
            None => "unknown error".to_owned(),
        }
    };
    std::panic::resume_unwind(Box::new(format!("libjpeg fatal error: {message}")));
}

fn to_rgb8(img: DynamicImage, alpha: AlphaMode) -> Rgb8 {
    let (width, height) = (img.width() as usize, img.height() as usize);
    let px = |r: u8, g: u8, b: u8, a: u8| match alpha {
        AlphaMode::CompositeWhite => [over_white(r, a), over_white(g, a), over_white(b, a)],
        AlphaMode::Drop => [r, g, b],
    };
    let hi = |v: u16| (v >> 8) as u8;
    let data: Vec<u8> = match img {
        DynamicImage::ImageRgb8(buf) => buf.into_raw(),
        DynamicImage::ImageRgba8(buf) => buf
            .into_raw()
            .chunks_exact(4)
            .flat_map(|p| px(p[0], p[1], p[2], p[3]))
            .collect(),
        DynamicImage::ImageLuma8(buf) => buf.into_raw().iter().flat_map(|&l| [l, l, l]).collect(),
        DynamicImage::ImageLumaA8(buf) => buf
            .into_raw()
            .chunks_exact(2)
            .flat_map(|p| px(p[0], p[0], p[0], p[1]))
            .collect(),
        DynamicImage::ImageRgb16(buf) => buf.into_raw().iter().map(|&v| hi(v)).collect(),
        DynamicImage::ImageRgba16(buf) => buf
            .into_raw()
            .chunks_exact(4)
            .flat_map(|p| px(hi(p[0]), hi(p[1]), hi(p[2]), hi(p[3])))
            .collect(),
        DynamicImage::ImageLuma16(buf) => buf.into_raw().iter().flat_map(|&v| [hi(v); 3]).collect(),
        DynamicImage::ImageLumaA16(buf) => buf
            .into_raw()
            .chunks_exact(2)
            .flat_map(|p| px(hi(p[0]), hi(p[0]), hi(p[0]), hi(p[1])))
            .collect(),
        other => other.to_rgb8().into_raw(),
    };
    Rgb8 {
        width,
        height,
        data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(matches!(
            decode_rgb(b"hello"),
            Err(ImageError::UnsupportedFormat)
        ));
        let mut png = vec![0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a];
        png.extend_from_slice(&[0u8; 40]);
        assert!(matches!(decode_rgb(&png), Err(ImageError::Decode(_))));
        assert!(decode_rgb(&[]).is_err());
        // BMP is decodable by `image` in general but not an accepted format here.
        assert!(matches!(
            decode_rgb(b"BM\0\0\0\0"),
            Err(ImageError::UnsupportedFormat)
        ));
    }

    /// The libjpeg path: a JPEG signature over garbage is a `Decode` error (libjpeg's fatal
    /// errors unwind into it), never a panic or an abort. A file cut inside the scan data is
    /// refused as Pillow refuses it, not grey-filled; cut in the headers, it fails too.
    #[test]
    fn broken_jpegs_are_errors_not_panics() {
        let mut garbage = vec![0xff, 0xd8, 0xff, 0xe0];
        garbage.extend_from_slice(&[0x13; 64]);
        assert!(matches!(decode_rgb(&garbage), Err(ImageError::Decode(_))));
        let bytes = std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/images/photo_420.jpg"),
        )
        .unwrap();
        let whole = decode_rgb(&bytes).unwrap();
        assert_eq!((whole.width, whole.height), (97, 61));
        for cut in [4, 20, 200, bytes.len() / 2, bytes.len() - 40] {
            match decode_rgb(&bytes[..cut]) {
                Ok(img) => panic!("cut {cut} decoded as {}x{}", img.width, img.height),
                Err(e) => assert!(matches!(e, ImageError::Decode(_)), "cut {cut}: {e}"),
            }
        }
        let e = decode_rgb(&bytes[..bytes.len() / 2]).unwrap_err();
        assert!(e.to_string().contains("truncated"), "{e}");
        // Even with only the end-of-image marker missing, Pillow 13 refuses it ("image file is
        // truncated (37 bytes not processed)"): libjpeg ran out of data in the last row.
        assert!(decode_rgb(&bytes[..bytes.len() - 2]).is_err());
        // libjpeg's own fatal errors still carry its message.
        match decode_rgb(&garbage) {
            Err(ImageError::Decode(m)) => assert!(m.contains("libjpeg"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn alpha_is_composited_on_white_or_dropped() {
        let img =
            image::RgbaImage::from_raw(3, 1, vec![200, 100, 50, 0, 10, 20, 30, 255, 0, 0, 0, 128])
                .unwrap();
        let mut bytes = Vec::new();
        DynamicImage::ImageRgba8(img)
            .write_to(&mut Cursor::new(&mut bytes), ImageFormat::Png)
            .unwrap();
        // Values from PIL: alpha_composite(white, img).convert("RGB").
        assert_eq!(
            decode_rgb(&bytes).unwrap().data,
            vec![255, 255, 255, 10, 20, 30, 127, 127, 127]
        );
        assert_eq!(
            decode_rgb_with(&bytes, AlphaMode::Drop).unwrap().data,
            vec![200, 100, 50, 10, 20, 30, 0, 0, 0]
        );
    }

    #[test]
    fn opaque_composite_is_identity() {
        for v in 0..=255u8 {
            assert_eq!(over_white(v, 255), v);
        }
    }
}
