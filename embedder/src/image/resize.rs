//! Pillow's `Image.resize` for 8-bit RGB (`libImaging/Resample.c` of Pillow 13), bit for
//! bit: antialiased separable convolution (support widened by the downscale factor), the
//! horizontal pass first unless the height shrinks much more than the width, 22-bit
//! fixed-point coefficients, rounding and clipping to u8 after each pass.

/// Pillow resampling filters (the numbers of `PIL.Image.Resampling`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// `BOX` (4).
    Box,
    /// `BILINEAR` (2).
    Bilinear,
    /// `HAMMING` (5).
    Hamming,
    /// `BICUBIC` (3), a = -0.5; CLIP's choice.
    Bicubic,
    /// `LANCZOS` (1).
    Lanczos,
}

impl Filter {
    /// From PIL's numeric code; `NEAREST` (0) is not supported.
    pub fn from_pil(code: i64) -> Option<Self> {
        match code {
            1 => Some(Self::Lanczos),
            2 => Some(Self::Bilinear),
            3 => Some(Self::Bicubic),
            4 => Some(Self::Box),
            5 => Some(Self::Hamming),
            _ => None,
        }
    }

    fn support(self) -> f64 {
        match self {
            Self::Box => 0.5,
            Self::Bilinear | Self::Hamming => 1.0,
            Self::Bicubic => 2.0,
            Self::Lanczos => 3.0,
        }
    }

    fn eval(self, x: f64) -> f64 {
        match self {
            Self::Box => {
                if (-0.5..0.5).contains(&x) {
                    1.0
                } else {
                    0.0
                }
            }
            Self::Bilinear => {
                let x = x.abs();
                if x < 1.0 { 1.0 - x } else { 0.0 }
            }
            Self::Hamming => {
                let x = x.abs();
                if x == 0.0 {
                    1.0
                } else if x >= 1.0 {
                    0.0
                } else {
                    let xp = x * std::f64::consts::PI;
                    (xp.sin() / xp) * (0.46 + 0.54 * xp.cos())
                }
            }
            Self::Bicubic => {
                const A: f64 = -0.5;
                let x = x.abs();
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
            Self::Lanczos => {
                if (-3.0..3.0).contains(&x) {
                    sinc(x) * sinc(x / 3.0)
                } else {
                    0.0
                }
            }
        }
    }
}

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        let x = x * std::f64::consts::PI;
        x.sin() / x
    }
}

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Per output pixel: first input index, tap count, and fixed-point coefficients.
struct Coeffs {
    bounds: Vec<(usize, usize)>,
    ksize: usize,
    kk: Vec<i32>,
}

/// `precompute_coeffs` + `normalize_coeffs_8bpc` for the box `[0, in_size)`.
fn precompute(in_size: usize, out_size: usize, filter: Filter) -> Coeffs {
    let in0 = 0.0f64;
    // Pillow keeps the box in single precision floats.
    let in1 = in_size as f32 as f64;
    let scale = (in1 - in0) / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size);
    let mut kk = vec![0i32; out_size * ksize];
    let mut k = vec![0f64; ksize];
    for xx in 0..out_size {
        let center = in0 + (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        // C casts truncate toward zero.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let n = xmax.saturating_sub(xmin).min(ksize);
        let mut ww = 0.0;
        for (x, kx) in k.iter_mut().enumerate().take(n) {
            let w = filter.eval((x as f64 + xmin as f64 - center + 0.5) * ss);
            *kx = w;
            ww += w;
        }
        let row = &mut kk[xx * ksize..(xx + 1) * ksize];
        for (dst, &kx) in row.iter_mut().zip(&k).take(n) {
            let v = if ww != 0.0 { kx / ww } else { kx };
            let scaled = v * f64::from(1u32 << PRECISION_BITS);
            *dst = if v < 0.0 {
                (-0.5 + scaled) as i32
            } else {
                (0.5 + scaled) as i32
            };
        }
        bounds.push((xmin, n));
    }
    Coeffs { bounds, ksize, kk }
}

fn clip8(v: i32) -> u8 {
    if v >= (1 << PRECISION_BITS << 8) {
        255
    } else if v <= 0 {
        0
    } else {
        (v >> PRECISION_BITS) as u8
    }
}

/// Interleaved RGB8 image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rgb8 {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// `height * width * 3` bytes, row-major.
    pub data: Vec<u8>,
}

/// `Image.resize((width, height), filter)` of an RGB image, `reducing_gap=None`.
pub fn resize(img: &Rgb8, width: usize, height: usize, filter: Filter) -> Rgb8 {
    let need_h = width != img.width;
    let need_v = height != img.height;
    if !need_h && !need_v {
        return img.clone();
    }
    let horiz = precompute(img.width, width, filter);
    let vert = precompute(img.height, height, filter);
    // Pillow 13 runs the vertical pass first when the height shrinks by more than twice as
    // many pixels as the width does (`ImagingResampleInner`). The 8-bit rounding between
    // passes makes the order visible in the output, so it is followed exactly.
    let (dh, dw) = (
        img.height as i64 - height as i64,
        img.width as i64 - width as i64,
    );
    if dh > 0 && dh > dw * 2 {
        let rows = vertical(img, &vert, &vert.bounds, height);
        return if need_h {
            horizontal(&rows, &horiz, 0, height)
        } else {
            rows
        };
    }
    let mut current = std::borrow::Cow::Borrowed(img);
    let mut vbounds = vert.bounds.clone();
    if need_h {
        // Only rows the vertical pass reads are resampled horizontally.
        let first = vert.bounds.first().map_or(0, |b| b.0);
        let last = vert.bounds.last().map_or(img.height, |b| b.0 + b.1);
        let (first, last) = if need_v {
            (first, last)
        } else {
            (0, img.height)
        };
        if need_v {
            for b in &mut vbounds {
                b.0 -= first;
            }
        }
        current = std::borrow::Cow::Owned(horizontal(img, &horiz, first, last));
    }
    if need_v {
        vertical(&current, &vert, &vbounds, height)
    } else {
        current.into_owned()
    }
}

fn horizontal(img: &Rgb8, c: &Coeffs, first: usize, last: usize) -> Rgb8 {
    let out_w = c.bounds.len();
    let rows = last - first;
    let mut data = vec![0u8; rows * out_w * 3];
    let half = 1i32 << (PRECISION_BITS - 1);
    for y in 0..rows {
        let src = &img.data[(y + first) * img.width * 3..(y + first + 1) * img.width * 3];
        let dst = &mut data[y * out_w * 3..(y + 1) * out_w * 3];
        for (xx, &(xmin, n)) in c.bounds.iter().enumerate() {
            let k = &c.kk[xx * c.ksize..xx * c.ksize + n];
            let mut ss = [half; 3];
            for (x, &kx) in k.iter().enumerate() {
                let p = &src[(x + xmin) * 3..(x + xmin) * 3 + 3];
                ss[0] += i32::from(p[0]) * kx;
                ss[1] += i32::from(p[1]) * kx;
                ss[2] += i32::from(p[2]) * kx;
            }
            dst[xx * 3] = clip8(ss[0]);
            dst[xx * 3 + 1] = clip8(ss[1]);
            dst[xx * 3 + 2] = clip8(ss[2]);
        }
    }
    Rgb8 {
        width: out_w,
        height: rows,
        data,
    }
}

fn vertical(img: &Rgb8, c: &Coeffs, bounds: &[(usize, usize)], out_h: usize) -> Rgb8 {
    let w = img.width;
    let mut data = vec![0u8; out_h * w * 3];
    let half = 1i32 << (PRECISION_BITS - 1);
    let mut acc = vec![0i32; w * 3];
    for (yy, &(ymin, n)) in bounds.iter().enumerate() {
        let k = &c.kk[yy * c.ksize..yy * c.ksize + n];
        acc.fill(half);
        for (y, &ky) in k.iter().enumerate() {
            let src = &img.data[(y + ymin) * w * 3..(y + ymin + 1) * w * 3];
            for (a, &p) in acc.iter_mut().zip(src) {
                *a += i32::from(p) * ky;
            }
        }
        for (d, &a) in data[yy * w * 3..(yy + 1) * w * 3].iter_mut().zip(&acc) {
            *d = clip8(a);
        }
    }
    Rgb8 {
        width: w,
        height: out_h,
        data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_image_stays_constant() {
        let img = Rgb8 {
            width: 37,
            height: 23,
            data: [10u8, 128, 250].repeat(37 * 23),
        };
        for (w, h) in [(11, 7), (64, 40), (37, 9), (5, 23)] {
            let out = resize(&img, w, h, Filter::Bicubic);
            assert_eq!((out.width, out.height), (w, h));
            assert!(out.data.chunks(3).all(|p| p == [10, 128, 250]));
        }
    }

    /// Pillow 13's pass order: vertical first only when the height loses more than twice as
    /// many pixels as the width (the rounding to u8 between passes makes the order visible).
    #[test]
    fn pass_order_follows_pillow() {
        let (w, h) = (37usize, 120usize);
        let data: Vec<u8> = (0..w * h * 3)
            .map(|i| ((i * 7919 + i / 3 * 31) % 251) as u8)
            .collect();
        let img = Rgb8 {
            width: w,
            height: h,
            data,
        };
        let b = Filter::Bicubic;
        // 120 -> 116 rows (4) vs 37 -> 36 columns (1): vertical first.
        let vertical_first = resize(&resize(&img, w, 116, b), 36, 116, b);
        let horizontal_first = resize(&resize(&img, 36, h, b), 36, 116, b);
        assert_ne!(
            vertical_first, horizontal_first,
            "the order must be observable here"
        );
        assert_eq!(resize(&img, 36, 116, b), vertical_first);
        // 120 -> 118 rows (2) vs 37 -> 36 columns (1): not more than twice, horizontal first.
        let hv = resize(&resize(&img, 36, h, b), 36, 118, b);
        assert_eq!(resize(&img, 36, 118, b), hv);
    }

    #[test]
    fn coefficients_sum_to_one_in_fixed_point() {
        let c = precompute(100, 33, Filter::Bicubic);
        for (i, &(_, n)) in c.bounds.iter().enumerate() {
            let s: i32 = c.kk[i * c.ksize..i * c.ksize + n].iter().sum();
            assert!((s - (1 << PRECISION_BITS)).abs() <= n as i32, "{s}");
        }
    }
}
