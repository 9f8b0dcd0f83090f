//! `glimpse embed` over an image folder and an image list with the tiny CLIP: ids, partition
//! layout, unreadable images, saved images, slices, resume checks.

#![allow(clippy::unwrap_used)]

mod embed_support;

use std::path::Path;

use embed_support::*;
use glimpse_embedder::{ClipImageEncoder, DeviceChoice, ModelDir};
use glimpse_server::embed::{
    EmbedOptions, ImageInput, InputSpec, ProgressMode, embed, embed_with_encoder, open_input,
};

fn options(input: ImageInput, out: &Path, start: u64, end: Option<u64>, size: u64) -> EmbedOptions {
    let mut o = EmbedOptions::new(InputSpec::Local(input), out);
    o.start = start;
    o.end = end;
    o.partition_size = size;
    o.batch_size = 4;
    o.threads = Some(2);
    o.progress = ProgressMode::Quiet;
    o
}

#[test]
fn folder_range_gives_exact_ids_partitions_and_error_sidecars() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let images = tmp.path().join("images");
    write_image_folder(&images, 40);
    let out = tmp.path().join("out");
    let (start, end) = (3u64, 29u64);
    let s = embed(
        model.to_str().unwrap(),
        DeviceChoice::Cpu,
        &options(
            ImageInput::Folder(images.clone()),
            &out,
            start,
            Some(end),
            10,
        ),
    )
    .unwrap();
    assert_eq!(
        (
            s.partitions_total,
            s.partitions_written,
            s.partitions_skipped
        ),
        (3, 3, 0)
    );

    let dirs = partition_dirs(&out);
    let names: Vec<String> = dirs
        .iter()
        .map(|d| d.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "embeddings_3_29.parquet_part_0",
            "embeddings_3_29.parquet_part_1",
            "embeddings_3_29.parquet_part_2"
        ]
    );
    // Each partition: rows + failures are exactly its id range.
    for (n, (lo, hi)) in [(3u64, 13u64), (13, 23), (23, 29)].into_iter().enumerate() {
        let rows = read_rows(&dirs[n].join("data.parquet"));
        let failed: Vec<u64> = glimpse_server::embed::read_failures(&dirs[n].join("errors.jsonl"))
            .unwrap()
            .into_iter()
            .map(|f| f.id)
            .collect();
        let want_rows: Vec<i64> = (lo..hi)
            .filter(|&i| !is_corrupt(i as usize))
            .map(|i| i as i64)
            .collect();
        let want_failed: Vec<u64> = (lo..hi).filter(|&i| is_corrupt(i as usize)).collect();
        assert_eq!(
            rows.iter().map(|r| r.id).collect::<Vec<_>>(),
            want_rows,
            "partition {n}"
        );
        assert_eq!(failed, want_failed, "partition {n}");
    }
    let rows = read_all_rows(&out);
    assert_eq!(rows.len() + failed_ids(&out).len(), (end - start) as usize);
    // Paths point at the right files, embeddings are unit vectors of the model's width.
    for r in &rows {
        let want = images.join(format!("g{}", r.id / 10));
        assert!(
            r.image_path
                .as_deref()
                .unwrap()
                .starts_with(want.to_str().unwrap()),
            "{r:?}"
        );
        assert!(
            r.image_path
                .as_deref()
                .unwrap()
                .contains(&format!("img_{:03}.", r.id))
        );
        assert_eq!(r.embedding.len(), 24);
        let norm: f32 = r.embedding.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "{norm}");
    }
    // Distinct images give distinct vectors.
    assert_ne!(rows[0].embedding, rows[1].embedding);
    // Errors name the file and the reason.
    let errs = glimpse_server::embed::read_failures(&dirs[0].join("errors.jsonl")).unwrap();
    assert_eq!(errs[0].id, 4);
    assert!(errs[0].path.as_deref().unwrap().ends_with("img_004.png"));
    assert!(!errs[0].reason.is_empty());
    // The footer records model, dimension, normalisation and partitioning.
    let kv = footer(&dirs[1].join("data.parquet"));
    assert_eq!(kv["glimpse.model"], model.to_str().unwrap());
    assert_eq!(kv["glimpse.dim"], "24");
    assert_eq!(kv["glimpse.normalized"], "true");
    assert_eq!(kv["glimpse.embed.partition_size"], "10");
    assert_eq!(kv["glimpse.embed.range"], "3..29");
    assert_eq!(kv["glimpse.embed.partition"], "1");
    // No temporary folder is left behind.
    assert!(
        std::fs::read_dir(&out).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with('.'))
    );

    // Rerun: everything is complete, nothing rewritten.
    let before = std::fs::metadata(dirs[0].join("data.parquet"))
        .unwrap()
        .modified()
        .unwrap();
    let s = embed(
        model.to_str().unwrap(),
        DeviceChoice::Cpu,
        &options(ImageInput::Folder(images), &out, start, Some(end), 10),
    )
    .unwrap();
    assert_eq!((s.partitions_written, s.partitions_skipped), (0, 3));
    assert_eq!(
        std::fs::metadata(dirs[0].join("data.parquet"))
            .unwrap()
            .modified()
            .unwrap(),
        before
    );
}

#[test]
fn two_slices_equal_one_run_over_their_union() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let dir = ModelDir::from_dir(&model).unwrap();
    let encoder = ClipImageEncoder::load(&dir, DeviceChoice::Cpu).unwrap();
    let images = tmp.path().join("images");
    write_image_folder(&images, 30);
    let source = open_input(&InputSpec::Local(ImageInput::Folder(images.clone()))).unwrap();
    assert_eq!(source.len(), 30);

    let whole = tmp.path().join("whole");
    embed_with_encoder(
        &encoder,
        dir.id(),
        &source,
        &options(ImageInput::Folder(images.clone()), &whole, 0, None, 8),
    )
    .unwrap();
    let sliced = tmp.path().join("sliced");
    for (s, e) in [(0, 13), (13, 30)] {
        embed_with_encoder(
            &encoder,
            dir.id(),
            &source,
            &options(ImageInput::Folder(images.clone()), &sliced, s, Some(e), 8),
        )
        .unwrap();
    }
    let a = read_all_rows(&whole);
    let b = read_all_rows(&sliced);
    assert_eq!(
        a.iter().map(|r| r.id).collect::<Vec<_>>(),
        b.iter().map(|r| r.id).collect::<Vec<_>>()
    );
    assert_eq!(a.len(), (0..30).filter(|&i| !is_corrupt(i)).count());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.image_path, y.image_path);
        for (p, q) in x.embedding.iter().zip(&y.embedding) {
            assert!((p - q).abs() < 1e-5, "id {}: {p} vs {q}", x.id);
        }
    }
    assert_eq!(failed_ids(&whole), failed_ids(&sliced));
    assert_eq!(partition_dirs(&sliced).len(), 2 + 3);
}

#[test]
fn save_images_writes_jpegs_and_points_rows_at_them() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let images = tmp.path().join("images");
    write_image_folder(&images, 12);
    let out = tmp.path().join("out");
    let saved = tmp.path().join("saved");
    let mut o = options(ImageInput::Folder(images), &out, 0, None, 5);
    o.save_images = Some(saved.clone());
    embed(model.to_str().unwrap(), DeviceChoice::Cpu, &o).unwrap();
    let rows = read_all_rows(&out);
    assert_eq!(rows.len(), 11);
    for r in &rows {
        let rel = format!("0000/{}.jpg", r.id);
        assert_eq!(r.image_path.as_deref(), Some(rel.as_str()));
        let bytes = std::fs::read(saved.join(&rel)).unwrap();
        assert_eq!(
            image::guess_format(&bytes).unwrap(),
            image::ImageFormat::Jpeg
        );
        let (orig, _) = image_bytes(r.id as usize);
        let (w, h) = image::load_from_memory(&orig)
            .unwrap()
            .to_rgb8()
            .dimensions();
        assert_eq!(
            image::load_from_memory(&bytes)
                .unwrap()
                .to_rgb8()
                .dimensions(),
            (w, h)
        );
    }
    assert!(
        !saved.join("0000/4.jpg").exists(),
        "corrupt images are not saved"
    );
    assert_eq!(
        glimpse_server::embed::ImageSaver::relative_path(1_234_567),
        "0012/1234567.jpg"
    );
}

#[test]
fn image_list_ids_are_positions_among_non_blank_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let paths = write_image_folder(&tmp.path().join("images"), 6);
    let list = tmp.path().join("list.txt");
    // Reverse order, blank lines, a missing file, relative and absolute paths.
    let mut text = String::from("\n");
    for p in paths.iter().rev() {
        text.push_str(&format!("{}\n  \n", p.display()));
    }
    text.push_str("images/g0/img_000.png\r\nmissing.jpg\n");
    std::fs::write(&list, text).unwrap();
    let out = tmp.path().join("out");
    embed(
        model.to_str().unwrap(),
        DeviceChoice::Cpu,
        &options(ImageInput::List(list), &out, 0, None, 100),
    )
    .unwrap();
    let rows = read_all_rows(&out);
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    // Ids 0..=5 are images 5..=0 (image 4, id 1, is corrupt); id 6 is image 0 again by a
    // relative path; id 7 does not exist.
    assert_eq!(ids, [0, 2, 3, 4, 5, 6]);
    assert_eq!(failed_ids(&out), [1, 7]);
    assert_eq!(rows[5].image_path.as_deref(), Some("images/g0/img_000.png"));
    assert_eq!(
        rows[4].embedding, rows[5].embedding,
        "same image, same vector"
    );
}

#[test]
fn bad_ranges_and_incompatible_resumes_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let images = tmp.path().join("images");
    write_image_folder(&images, 10);
    let out = tmp.path().join("out");
    let m = model.to_str().unwrap();
    let folder = || ImageInput::Folder(images.clone());
    let err = embed(
        m,
        DeviceChoice::Cpu,
        &options(folder(), &out, 0, Some(11), 5),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("past the end") && err.contains("10 items"),
        "{err}"
    );
    let err = embed(
        m,
        DeviceChoice::Cpu,
        &options(folder(), &out, 7, Some(7), 5),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("empty range"), "{err}");

    embed(m, DeviceChoice::Cpu, &options(folder(), &out, 0, None, 5)).unwrap();
    // Same range, other partition size: the names collide, the footer tells.
    let err = embed(m, DeviceChoice::Cpu, &options(folder(), &out, 0, None, 4))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cannot resume") && err.contains("partition size"),
        "{err}"
    );
    // Other model.
    let other = tmp.path().join("other-model");
    glimpse_embedder::testing::write_tiny_clip(
        &other,
        &glimpse_embedder::testing::TinyClipSpec::small(),
    )
    .unwrap();
    let err = embed(
        other.to_str().unwrap(),
        DeviceChoice::Cpu,
        &options(folder(), &out, 0, None, 5),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("cannot resume") && err.contains("model"),
        "{err}"
    );
    // Nothing was damaged by the refusals.
    assert_eq!(read_all_rows(&out).len(), 9);
}

#[test]
fn damaged_partitions_are_redone() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let images = tmp.path().join("images");
    write_image_folder(&images, 15);
    let out = tmp.path().join("out");
    let m = model.to_str().unwrap();
    let o = options(ImageInput::Folder(images), &out, 0, None, 5);
    embed(m, DeviceChoice::Cpu, &o).unwrap();
    let want = read_all_rows(&out);
    let dirs = partition_dirs(&out);
    // Truncated Parquet, missing sidecar, a leftover temporary folder.
    let data = dirs[0].join("data.parquet");
    let bytes = std::fs::read(&data).unwrap();
    std::fs::write(&data, &bytes[..bytes.len() / 2]).unwrap();
    std::fs::remove_file(dirs[2].join("errors.jsonl")).unwrap();
    std::fs::create_dir(out.join(".embeddings_0_15.parquet_part_1.tmp-x")).unwrap();
    let s = embed(m, DeviceChoice::Cpu, &o).unwrap();
    assert_eq!((s.partitions_written, s.partitions_skipped), (2, 1));
    assert_eq!(read_all_rows(&out), want);
    assert!(!out.join(".embeddings_0_15.parquet_part_1.tmp-x").exists());
}
