//! `transformers.CLIPImageProcessor` (the PIL-based one): resize the shortest side with
//! Pillow, centre-crop (zero-padding when too small), rescale, normalise, CHW f32.

use std::path::Path;

use serde_json::Value;

use super::decode::{AlphaMode, decode_rgb_with};
use super::resize::{Filter, Rgb8, resize};
use crate::error::{EmbedderError, ImageError, Result, io_err};

/// Target of the resize step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    /// Shortest side to this many pixels, aspect kept (`{"shortest_edge": n}` or an int).
    ShortestEdge(usize),
    /// Exactly this size (`{"height": h, "width": w}`).
    Exact {
        /// Output height.
        height: usize,
        /// Output width.
        width: usize,
    },
}

/// `preprocessor_config.json`; defaults are OpenAI CLIP's.
#[derive(Debug, Clone, PartialEq)]
pub struct PreprocessorConfig {
    /// Whether to resize.
    pub do_resize: bool,
    /// Resize target.
    pub size: Size,
    /// Resampling filter.
    pub resample: Filter,
    /// Whether to centre-crop.
    pub do_center_crop: bool,
    /// Crop `(height, width)`.
    pub crop_size: (usize, usize),
    /// Whether to multiply by `rescale_factor`.
    pub do_rescale: bool,
    /// Usually 1/255.
    pub rescale_factor: f64,
    /// Whether to normalise with mean/std.
    pub do_normalize: bool,
    /// Per-channel mean.
    pub image_mean: [f64; 3],
    /// Per-channel standard deviation.
    pub image_std: [f64; 3],
    /// Transparency handling when converting to RGB (not part of the JSON file).
    pub alpha: AlphaMode,
}

impl Default for PreprocessorConfig {
    fn default() -> Self {
        Self {
            do_resize: true,
            size: Size::ShortestEdge(224),
            resample: Filter::Bicubic,
            do_center_crop: true,
            crop_size: (224, 224),
            do_rescale: true,
            rescale_factor: 1.0 / 255.0,
            do_normalize: true,
            image_mean: [0.481_454_66, 0.457_827_5, 0.408_210_73],
            image_std: [0.268_629_54, 0.261_302_58, 0.275_777_11],
            alpha: AlphaMode::CompositeWhite,
        }
    }
}

/// One image ready for the vision tower: normalised CHW f32 pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct PreprocessedImage {
    /// `3 * height * width` values, channel-major.
    pub pixels: Vec<f32>,
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
}

fn as_usize(v: &Value) -> Option<usize> {
    v.as_u64().and_then(|n| usize::try_from(n).ok())
}

fn triple(v: &Value) -> Option<[f64; 3]> {
    match v {
        Value::Number(n) => n.as_f64().map(|x| [x; 3]),
        Value::Array(a) if a.len() == 3 => Some([a[0].as_f64()?, a[1].as_f64()?, a[2].as_f64()?]),
        _ => None,
    }
}

impl PreprocessorConfig {
    /// Reads `preprocessor_config.json`; absent keys keep OpenAI defaults.
    pub fn from_file(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(io_err(path))?;
        let json: Value = serde_json::from_slice(&bytes).map_err(|e| EmbedderError::Config {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Self::from_json(&json).map_err(|message| EmbedderError::Config {
            path: path.to_path_buf(),
            message,
        })
    }

    /// Parses the JSON object of a preprocessor config.
    pub fn from_json(json: &Value) -> std::result::Result<Self, String> {
        let mut cfg = Self::default();
        let flag =
            |key: &str, default: bool| json.get(key).and_then(Value::as_bool).unwrap_or(default);
        cfg.do_resize = flag("do_resize", true);
        cfg.do_center_crop = flag("do_center_crop", true);
        cfg.do_rescale = flag("do_rescale", true);
        cfg.do_normalize = flag("do_normalize", true);
        if let Some(size) = json.get("size") {
            cfg.size = if let Some(n) = as_usize(size) {
                Size::ShortestEdge(n)
            } else if let Some(n) = size.get("shortest_edge").and_then(as_usize) {
                Size::ShortestEdge(n)
            } else if let (Some(height), Some(width)) = (
                size.get("height").and_then(as_usize),
                size.get("width").and_then(as_usize),
            ) {
                Size::Exact { height, width }
            } else {
                return Err(format!("unsupported size {size}"));
            };
        }
        if let Some(crop) = json.get("crop_size") {
            cfg.crop_size = if let Some(n) = as_usize(crop) {
                (n, n)
            } else if let (Some(h), Some(w)) = (
                crop.get("height").and_then(as_usize),
                crop.get("width").and_then(as_usize),
            ) {
                (h, w)
            } else {
                return Err(format!("unsupported crop_size {crop}"));
            };
        }
        if let Some(r) = json.get("resample") {
            let code = r.as_i64().ok_or("resample must be an integer")?;
            cfg.resample = Filter::from_pil(code)
                .ok_or_else(|| format!("resample {code} unsupported (nearest)"))?;
        }
        if let Some(f) = json.get("rescale_factor") {
            cfg.rescale_factor = f.as_f64().ok_or("rescale_factor must be a number")?;
        }
        if let Some(m) = json.get("image_mean") {
            cfg.image_mean = triple(m).ok_or("image_mean must have 3 numbers")?;
        }
        if let Some(s) = json.get("image_std") {
            cfg.image_std = triple(s).ok_or("image_std must have 3 numbers")?;
        }
        if cfg.image_std.contains(&0.0) {
            return Err("image_std contains 0".into());
        }
        if matches!(
            cfg.size,
            Size::ShortestEdge(0) | Size::Exact { height: 0, .. } | Size::Exact { width: 0, .. }
        ) || cfg.crop_size.0 == 0
            || cfg.crop_size.1 == 0
        {
            return Err("sizes must be positive".into());
        }
        Ok(cfg)
    }

    /// `(height, width)` of the tensors this config produces for a given input size.
    pub fn output_size(&self, height: usize, width: usize) -> (usize, usize) {
        let (h, w) = if self.do_resize {
            self.resize_target(height, width)
        } else {
            (height, width)
        };
        if self.do_center_crop {
            self.crop_size
        } else {
            (h, w)
        }
    }

    /// HF's `get_resize_output_image_size(default_to_square=False)`.
    fn resize_target(&self, height: usize, width: usize) -> (usize, usize) {
        match self.size {
            Size::Exact { height, width } => (height, width),
            Size::ShortestEdge(s) => {
                let (short, long) = if width <= height {
                    (width, height)
                } else {
                    (height, width)
                };
                // Python: int(s * long / short), a correctly rounded float division truncated.
                let new_long = ((s as f64 * long as f64) / short as f64) as usize;
                if width <= height {
                    (new_long, s)
                } else {
                    (s, new_long)
                }
            }
        }
    }

    /// Decodes and preprocesses encoded image bytes.
    pub fn preprocess_bytes(
        &self,
        bytes: &[u8],
    ) -> std::result::Result<PreprocessedImage, ImageError> {
        let rgb = decode_rgb_with(bytes, self.alpha)?;
        Ok(self.preprocess_rgb(&rgb))
    }

    /// Preprocesses an already decoded RGB image.
    pub fn preprocess_rgb(&self, rgb: &Rgb8) -> PreprocessedImage {
        let resized;
        let mut img = rgb;
        if self.do_resize {
            let (h, w) = self.resize_target(rgb.height, rgb.width);
            let (h, w) = (h.max(1), w.max(1));
            resized = resize(rgb, w, h, self.resample);
            img = &resized;
        }
        let cropped;
        if self.do_center_crop {
            cropped = center_crop(img, self.crop_size.0, self.crop_size.1);
            img = &cropped;
        }
        self.normalize(img)
    }

    fn normalize(&self, img: &Rgb8) -> PreprocessedImage {
        let plane = img.width * img.height;
        let mut pixels = vec![0f32; 3 * plane];
        let mut lut = [[0f32; 256]; 3];
        for (c, table) in lut.iter_mut().enumerate() {
            let mean = self.image_mean[c] as f32;
            let std = self.image_std[c] as f32;
            for (v, out) in table.iter_mut().enumerate() {
                // numpy: (x.astype(f64) * factor).astype(f32), then (x - mean) / std in f32.
                let x = if self.do_rescale {
                    (v as f64 * self.rescale_factor) as f32
                } else {
                    v as f32
                };
                *out = if self.do_normalize {
                    (x - mean) / std
                } else {
                    x
                };
            }
        }
        for (i, p) in img.data.chunks_exact(3).enumerate() {
            for c in 0..3 {
                pixels[c * plane + i] = lut[c][p[c] as usize];
            }
        }
        PreprocessedImage {
            pixels,
            height: img.height,
            width: img.width,
        }
    }
}

/// HF's `center_crop`: floor-centred window; pads with zeros where the image is smaller.
fn center_crop(img: &Rgb8, crop_h: usize, crop_w: usize) -> Rgb8 {
    let (h, w) = (img.height as i64, img.width as i64);
    let (ch, cw) = (crop_h as i64, crop_w as i64);
    // Python floor division on possibly negative numbers.
    let top = (h - ch).div_euclid(2);
    let left = (w - cw).div_euclid(2);
    let (pad_top, pad_left) = if top >= 0 && left >= 0 && top + ch <= h && left + cw <= w {
        (0, 0)
    } else {
        let new_h = ch.max(h);
        let new_w = cw.max(w);
        ((new_h - h + 1) / 2, (new_w - w + 1) / 2)
    };
    // Source row of output row r is r + top (in padded coords: r + top + pad_top - pad_top).
    let mut data = vec![0u8; crop_h * crop_w * 3];
    let (row0, col0) = (top + pad_top, left + pad_left);
    let new_h = if pad_top == 0 && pad_left == 0 {
        h
    } else {
        ch.max(h)
    };
    let new_w = if pad_top == 0 && pad_left == 0 {
        w
    } else {
        cw.max(w)
    };
    let (r_start, c_start) = (row0.max(0), col0.max(0));
    let (r_end, c_end) = ((row0 + ch).min(new_h), (col0 + cw).min(new_w));
    let out_h = (r_end - r_start).max(0) as usize;
    let out_w = (c_end - c_start).max(0) as usize;
    let mut out = Rgb8 {
        width: out_w,
        height: out_h,
        data: Vec::new(),
    };
    data.truncate(out_h * out_w * 3);
    for r in 0..out_h as i64 {
        for c in 0..out_w as i64 {
            let (pr, pc) = (r + r_start, c + c_start);
            let (sr, sc) = (pr - pad_top, pc - pad_left);
            if (0..h).contains(&sr) && (0..w).contains(&sc) {
                let src = ((sr * w + sc) * 3) as usize;
                let dst = ((r * out_w as i64 + c) * 3) as usize;
                data[dst..dst + 3].copy_from_slice(&img.data[src..src + 3]);
            }
        }
    }
    out.data = data;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(w: usize, h: usize) -> Rgb8 {
        let data = (0..w * h)
            .flat_map(|i| [(i % 251) as u8, (i / w) as u8, 7])
            .collect();
        Rgb8 {
            width: w,
            height: h,
            data,
        }
    }

    #[test]
    fn resize_target_matches_hf() {
        let cfg = PreprocessorConfig::default();
        assert_eq!(cfg.resize_target(480, 640), (224, 298));
        assert_eq!(cfg.resize_target(640, 480), (298, 224));
        assert_eq!(cfg.resize_target(100, 100), (224, 224));
        assert_eq!(cfg.resize_target(1, 1000), (224, 224000));
    }

    #[test]
    fn crop_takes_floor_centre() {
        let img = ramp(7, 5);
        let out = center_crop(&img, 2, 3);
        assert_eq!((out.height, out.width), (2, 3));
        // top = (5-2)//2 = 1, left = (7-3)//2 = 2
        assert_eq!(&out.data[0..3], &img.data[(7 + 2) * 3..(7 + 2) * 3 + 3]);
    }

    #[test]
    fn crop_pads_small_images_with_zeros() {
        let img = ramp(3, 2);
        let out = center_crop(&img, 4, 5);
        assert_eq!((out.height, out.width), (4, 5));
        // pad_top = ceil((4-2)/2) = 1, pad_left = ceil((5-3)/2) = 1
        assert_eq!(&out.data[0..3], &[0, 0, 0]);
        let at = |r: usize, c: usize| &out.data[(r * 5 + c) * 3..(r * 5 + c) * 3 + 3];
        assert_eq!(at(1, 1), &img.data[0..3]);
        assert_eq!(at(2, 3), &img.data[(3 + 2) * 3..(3 + 2) * 3 + 3]);
        assert_eq!(at(3, 4), &[0, 0, 0]);
    }

    #[test]
    fn config_variants_parse() {
        let j: Value = serde_json::json!({"size": {"shortest_edge": 40}, "crop_size": 32,
            "image_mean": [0.5, 0.5, 0.5], "image_std": 0.25, "resample": 2});
        let c = PreprocessorConfig::from_json(&j).unwrap();
        assert_eq!(c.size, Size::ShortestEdge(40));
        assert_eq!(c.crop_size, (32, 32));
        assert_eq!(c.image_std, [0.25; 3]);
        assert_eq!(c.resample, Filter::Bilinear);
        let j: Value = serde_json::json!({"resample": 0});
        assert!(PreprocessorConfig::from_json(&j).is_err());
    }
}
