//! Per-item work done on the decode thread pool: read, decode, optionally save as JPEG,
//! preprocess. Failures of one image are data (recorded, not fatal); failures to write the
//! output (saved images) are errors.

use std::collections::BTreeMap;
use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};

use glimpse_embedder::PreprocessedImage;
use glimpse_embedder::image::{MAX_SIDE, PreprocessorConfig, Rgb8, decode_rgb};
use image::{ExtendedColorType, ImageFormat, ImageReader, Limits};

use crate::embed::error::{Result, io_err};
use crate::embed::item::{Payload, SourceItem};
use crate::ingest::MetaValue;

/// An item ready for the model, or the reason it cannot be embedded.
#[derive(Debug)]
pub struct PreparedItem {
    /// Global id.
    pub id: u64,
    /// The path recorded in the output (the saved JPEG's when images are saved).
    pub image_path: Option<String>,
    /// Carried-through values.
    pub extra: BTreeMap<String, MetaValue>,
    /// Model input, or why there is none.
    pub image: std::result::Result<PreprocessedImage, String>,
}

/// Writes decoded images as JPEG under `{id / 100000:04}/{id}.jpg` of a folder.
#[derive(Debug, Clone)]
pub struct ImageSaver {
    root: PathBuf,
    quality: u8,
}

/// JPEG quality of saved images.
pub const SAVED_JPEG_QUALITY: u8 = 90;
/// Ids per sub-folder of saved images.
pub const SAVED_IDS_PER_FOLDER: u64 = 100_000;

impl ImageSaver {
    /// Saves into `root` (created if missing).
    pub fn new(root: &Path) -> Result<Self> {
        std::fs::create_dir_all(root).map_err(io_err(root))?;
        Ok(Self {
            root: root.to_path_buf(),
            quality: SAVED_JPEG_QUALITY,
        })
    }

    /// The path of id's image relative to the save folder: `{id / 100000:04}/{id}.jpg`.
    pub fn relative_path(id: u64) -> String {
        format!("{:04}/{id}.jpg", id / SAVED_IDS_PER_FOLDER)
    }

    /// The folder holding id's image.
    pub fn folder_of(&self, id: u64) -> PathBuf {
        self.root.join(format!("{:04}", id / SAVED_IDS_PER_FOLDER))
    }

    /// Encodes and writes one image (temporary file, fsync, rename); returns its relative path.
    pub fn save(&self, id: u64, rgb: &Rgb8) -> Result<String> {
        let rel = Self::relative_path(id);
        let path = self.root.join(&rel);
        let dir = self.folder_of(id);
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(Cursor::new(&mut jpeg), self.quality)
            .encode(
                &rgb.data,
                rgb.width as u32,
                rgb.height as u32,
                ExtendedColorType::Rgb8,
            )
            .map_err(|e| crate::embed::error::EmbedError::Io {
                path: path.clone(),
                source: std::io::Error::other(e),
            })?;
        let tmp = dir.join(format!(".{id}.jpg.tmp"));
        let mut f = std::fs::File::create(&tmp).map_err(io_err(&tmp))?;
        f.write_all(&jpeg).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io_err(&path))?;
        Ok(rel)
    }

    /// Fsyncs the folders of ids `lo..hi` so their renames are durable before the partition
    /// that points at them is committed.
    pub fn sync_folders(&self, lo: u64, hi: u64) -> Result<()> {
        if hi <= lo {
            return Ok(());
        }
        for bucket in lo / SAVED_IDS_PER_FOLDER..=(hi - 1) / SAVED_IDS_PER_FOLDER {
            let dir = self.root.join(format!("{bucket:04}"));
            if dir.exists() {
                std::fs::File::open(&dir)
                    .and_then(|d| d.sync_all())
                    .map_err(io_err(&dir))?;
            }
        }
        Ok(())
    }
}

/// Decodes JPEG, PNG, WebP, GIF (like the model server) and also BMP.
pub fn decode_image(bytes: &[u8]) -> std::result::Result<Rgb8, String> {
    if image::guess_format(bytes).ok() == Some(ImageFormat::Bmp) {
        let mut reader = ImageReader::with_format(Cursor::new(bytes), ImageFormat::Bmp);
        let mut limits = Limits::default();
        limits.max_image_width = Some(MAX_SIDE);
        limits.max_image_height = Some(MAX_SIDE);
        reader.limits(limits);
        let img = reader.decode().map_err(|e| format!("corrupt image: {e}"))?;
        if img.width() == 0 || img.height() == 0 {
            return Err("unusable image: zero-sized image".into());
        }
        let rgb = img.to_rgb8();
        return Ok(Rgb8 {
            width: rgb.width() as usize,
            height: rgb.height() as usize,
            data: rgb.into_raw(),
        });
    }
    decode_rgb(bytes).map_err(|e| e.to_string())
}

/// Reads, decodes, saves (if asked) and preprocesses one item.
pub fn prepare(
    item: SourceItem,
    preprocessor: &PreprocessorConfig,
    saver: Option<&ImageSaver>,
) -> Result<PreparedItem> {
    let SourceItem {
        id,
        mut image_path,
        payload,
        extra,
    } = item;
    let bytes = match payload {
        Payload::File(p) => {
            std::fs::read(&p).map_err(|e| format!("cannot read {}: {e}", p.display()))
        }
        Payload::Bytes(b) => Ok(b),
        Payload::Missing(reason) => Err(reason),
    };
    let rgb = bytes.and_then(|b| {
        if b.is_empty() {
            Err("empty file".to_owned())
        } else {
            decode_image(&b)
        }
    });
    let image = match rgb {
        Ok(rgb) => {
            if let Some(saver) = saver {
                image_path = Some(saver.save(id, &rgb)?);
            }
            Ok(preprocessor.preprocess_rgb(&rgb))
        }
        Err(e) => Err(e),
    };
    Ok(PreparedItem {
        id,
        image_path,
        extra,
        image,
    })
}
