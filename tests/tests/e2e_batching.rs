//! Query batching over HTTP: queries held in the queue share one forward pass and get the
//! scores their unbatched embedding gets; a full queue answers 503 with `Retry-After`; the
//! metrics and `took_ms.queue` move; `--batch-window-ms 0` turns batching off.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use base64::Engine;
use glimpse_e2e::{TestServer, png_bytes, tiny_dim, tiny_model, unit_vector};
use glimpse_server::model::{DeviceArg, Model};
use reqwest::blocking::Client;
use serde_json::{Value, json};

fn post(c: &Client, url: &str, body: &Value) -> (u16, Value, Option<String>) {
    let r = c.post(url).json(body).send().unwrap();
    let status = r.status().as_u16();
    let retry = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    (status, r.json().unwrap(), retry)
}

/// The value of the first sample line of `/metrics` that starts with `name` (labels included).
fn metric(c: &Client, srv: &TestServer, name: &str) -> f64 {
    let text = c.get(srv.at("/metrics")).send().unwrap().text().unwrap();
    text.lines()
        .find(|l| l.starts_with(name))
        .map_or(0.0, |l| l.rsplit(' ').next().unwrap().parse().unwrap())
}

fn scores(v: &Value) -> Vec<(String, f64)> {
    v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap().to_string(),
                r["score"].as_f64().unwrap(),
            )
        })
        .collect()
}

fn wait_queued(model: &Model, want: (usize, usize)) {
    let t = Instant::now();
    while model.queued_queries() != want {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "queued {:?}",
            model.queued_queries()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn setup(srv: &TestServer, c: &Client) -> String {
    let dim = tiny_dim();
    let (st, v, _) = post(
        c,
        &srv.at("/v1/collections"),
        &json!({"name": "imgs", "dim": dim}),
    );
    assert_eq!(st, 201, "{v}");
    let points: Vec<Value> = (0..40)
        .map(|i| json!({"id": format!("p{i}"), "vector": unit_vector(i, dim)}))
        .collect();
    let (st, v, _) = post(
        c,
        &srv.at("/v1/collections/imgs/points"),
        &json!({ "points": points }),
    );
    assert_eq!(st, 200, "{v}");
    srv.at("/v1/collections/imgs/search")
}

/// Answers to a search request on a thread of its own.
type Pending = std::thread::JoinHandle<(u16, Value, Option<String>)>;

/// Sends each text and each image (`image_base64`) as a search on a thread of its own, k = 40.
fn send_queries(
    c: &Client,
    search: &str,
    texts: &[String],
    pngs: &[Vec<u8>],
) -> (Vec<Pending>, Vec<Pending>) {
    let send = |body: Value| {
        let (c, url) = (c.clone(), search.to_string());
        std::thread::spawn(move || post(&c, &url, &body))
    };
    let texts = texts.iter().map(|t| send(json!({"text": t, "k": 40})));
    let texts = texts.collect();
    let images = pngs.iter().map(|png| {
        let b64 = base64::engine::general_purpose::STANDARD.encode(png);
        send(json!({"image_base64": b64, "k": 40}))
    });
    (texts, images.collect())
}

/// One test, so the process-wide metrics it reads move only for it.
#[test]
fn queries_share_passes_keep_their_bits_are_bounded_and_measured() {
    let dir = tempfile::tempdir().unwrap();
    let model_dir = tiny_model(dir.path());
    let model = model_dir.to_str().unwrap();
    let alone = Model::load(model, DeviceArg::Cpu).unwrap();
    let c = Client::new();

    // Batched: texts of different lengths and images held in the queue, then one pass each.
    let data = dir.path().join("batched");
    let srv = TestServer::start(&[
        "--data-dir",
        data.to_str().unwrap(),
        "--model",
        model,
        "--device",
        "cpu",
        "--batch-window-ms",
        "5",
        "--batch-queue",
        "12",
        "--query-cache",
        "0",
    ]);
    let search = setup(&srv, &c);
    let texts: Vec<String> = (0..8)
        .map(|i| format!("photo {i} {}", "of a red chair ".repeat(i * 2)))
        .collect();
    let pngs: Vec<Vec<u8>> = (0..4)
        .map(|i| png_bytes(30 + i, 20, i as u8 * 40))
        .collect();
    // Embedded alone first (the counters are process-wide: later reads count only the server).
    let text_alone: Vec<Vec<f32>> = texts
        .iter()
        .map(|t| alone.embed_text(t).unwrap().0.to_vec())
        .collect();
    let image_alone: Vec<Vec<f32>> = pngs.iter().map(|p| alone.embed_image(p).unwrap()).collect();
    let batches_before = metric(&c, &srv, "glimpse_embed_batch_size_count{tower=\"text\"}");
    let embeds_before = metric(&c, &srv, "glimpse_embeds_total{tower=\"text\"}");
    let sum_before = metric(&c, &srv, "glimpse_embed_batch_size_sum{tower=\"text\"}");
    let passes_before = metric(&c, &srv, "glimpse_embed_pass_seconds_count{tower=\"text\"}");
    let served = srv.model();
    served.hold_batchers(true);
    let (text_threads, image_threads) = send_queries(&c, &search, &texts, &pngs);
    wait_queued(&served, (8, 4));

    // The text queue holds 8 of 12: four more fit, the fifth is refused at once.
    let fillers: Vec<_> = (0..4)
        .map(|i| {
            let (c, url, body) = (
                c.clone(),
                search.clone(),
                json!({"text": format!("filler {i}")}),
            );
            std::thread::spawn(move || post(&c, &url, &body))
        })
        .collect();
    wait_queued(&served, (12, 4));
    let (st, v, retry) = post(&c, &search, &json!({"text": "one too many"}));
    assert_eq!(st, 503, "{v}");
    assert_eq!(v["error"]["code"], "embed_queue_full", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--batch-queue")
    );
    assert_eq!(retry.as_deref(), Some("1"));
    served.hold_batchers(false);

    for ((h, t), want) in text_threads.into_iter().zip(&texts).zip(&text_alone) {
        let (st, v, _) = h.join().unwrap();
        assert_eq!(st, 200, "{v}");
        assert!(v["took_ms"]["queue"].as_f64().unwrap() > 0.0, "{v}");
        // The same scores as the vector embedded alone (bit-identical query vectors).
        let (_, by_vector, _) = post(&c, &search, &json!({"vector": want, "k": 40}));
        assert_eq!(scores(&v), scores(&by_vector), "{t:?}");
    }
    for (h, want) in image_threads.into_iter().zip(&image_alone) {
        let (st, v, _) = h.join().unwrap();
        assert_eq!(st, 200, "{v}");
        let (_, by_vector, _) = post(&c, &search, &json!({"vector": want, "k": 40}));
        assert_eq!(scores(&v), scores(&by_vector), "image");
    }
    for h in fillers {
        assert_eq!(h.join().unwrap().0, 200);
    }
    // Multipart image queries go through the same batcher.
    let form = reqwest::blocking::multipart::Form::new()
        .part(
            "image",
            reqwest::blocking::multipart::Part::bytes(pngs[0].clone()).file_name("q.png"),
        )
        .text("k", "40");
    let v: Value = c
        .post(&search)
        .multipart(form)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let (_, by_vector, _) = post(&c, &search, &json!({"vector": image_alone[0], "k": 40}));
    assert_eq!(scores(&v), scores(&by_vector), "multipart");

    // 12 texts in one pass (8 + 4 fillers; max 32), whatever the window.
    let batches = metric(&c, &srv, "glimpse_embed_batch_size_count{tower=\"text\"}");
    let embeds = metric(&c, &srv, "glimpse_embeds_total{tower=\"text\"}");
    assert_eq!(batches - batches_before, 1.0);
    assert_eq!(embeds - embeds_before, 12.0);
    assert_eq!(
        metric(&c, &srv, "glimpse_embed_batch_size_sum{tower=\"text\"}") - sum_before,
        12.0
    );
    assert!(
        metric(
            &c,
            &srv,
            "glimpse_embed_queue_wait_seconds_count{tower=\"text\"}"
        ) >= 12.0
    );
    assert!(
        metric(
            &c,
            &srv,
            "glimpse_embed_queue_wait_seconds_sum{tower=\"image\"}"
        ) > 0.0
    );
    // The one text pass of 12 was timed.
    assert_eq!(
        metric(&c, &srv, "glimpse_embed_pass_seconds_count{tower=\"text\"}") - passes_before,
        1.0
    );
    assert!(metric(&c, &srv, "glimpse_embed_pass_seconds_sum{tower=\"text\"}") > 0.0);
    assert_eq!(
        metric(
            &c,
            &srv,
            "glimpse_embed_queue_rejected_total{tower=\"text\"}"
        ),
        1.0
    );
    srv.stop();

    // --batch-window-ms 0: no batcher, every query its own pass, no queue.
    let data = dir.path().join("unbatched");
    let srv = TestServer::start(&[
        "--data-dir",
        data.to_str().unwrap(),
        "--model",
        model,
        "--device",
        "cpu",
        "--batch-window-ms",
        "0",
    ]);
    let search = setup(&srv, &c);
    assert_eq!(srv.model().queued_queries(), (0, 0));
    let batches_before = metric(&c, &srv, "glimpse_embed_batch_size_count{tower=\"text\"}");
    let embeds_before = metric(&c, &srv, "glimpse_embeds_total{tower=\"text\"}");
    let threads: Vec<_> = texts
        .iter()
        .map(|t| {
            let (c, url, body) = (c.clone(), search.clone(), json!({"text": t, "k": 40}));
            std::thread::spawn(move || post(&c, &url, &body))
        })
        .collect();
    for ((h, t), want) in threads.into_iter().zip(&texts).zip(&text_alone) {
        let (st, v, _) = h.join().unwrap();
        assert_eq!(st, 200, "{v}");
        assert_eq!(v["took_ms"]["queue"].as_f64(), Some(0.0));
        let (_, by_vector, _) = post(&c, &search, &json!({"vector": want, "k": 40}));
        assert_eq!(scores(&v), scores(&by_vector), "{t:?}");
    }
    assert_eq!(
        metric(&c, &srv, "glimpse_embed_batch_size_count{tower=\"text\"}"),
        batches_before
    );
    assert_eq!(
        metric(&c, &srv, "glimpse_embeds_total{tower=\"text\"}") - embeds_before,
        8.0
    );
    // The cache is on by default: a repeat is a hit and runs no tower.
    let (st, _, _) = post(&c, &search, &json!({"text": &texts[0]}));
    assert_eq!(st, 200);
    assert_eq!(
        metric(&c, &srv, "glimpse_embeds_total{tower=\"text\"}") - embeds_before,
        8.0
    );
    srv.stop();

    // --device cpu-w8a8: both towers on the integer kernel, batched queries keep the bits
    // they get alone, and those are not the f32 vectors.
    let data = dir.path().join("w8a8");
    let srv = TestServer::start(&[
        "--data-dir",
        data.to_str().unwrap(),
        "--model",
        model,
        "--device",
        "cpu-w8a8",
        "--batch-window-ms",
        "5",
        "--query-cache",
        "0",
    ]);
    let search = setup(&srv, &c);
    let int8 = Model::load(model, DeviceArg::CpuW8a8).unwrap();
    let served = srv.model();
    served.hold_batchers(true);
    let (text_threads, image_threads) = send_queries(&c, &search, &texts, &pngs);
    wait_queued(&served, (8, 4));
    served.hold_batchers(false);
    for ((h, t), f32_vector) in text_threads.into_iter().zip(&texts).zip(&text_alone) {
        let (st, v, _) = h.join().unwrap();
        assert_eq!(st, 200, "{v}");
        let want = int8.embed_text(t).unwrap().0.to_vec();
        assert_ne!(&want, f32_vector, "{t:?}: cpu-w8a8 gave the f32 vector");
        let (_, by_vector, _) = post(&c, &search, &json!({"vector": want, "k": 40}));
        assert_eq!(scores(&v), scores(&by_vector), "w8a8 {t:?}");
    }
    for ((h, png), f32_vector) in image_threads.into_iter().zip(&pngs).zip(&image_alone) {
        let (st, v, _) = h.join().unwrap();
        assert_eq!(st, 200, "{v}");
        let want = int8.embed_image(png).unwrap();
        assert_ne!(&want, f32_vector, "cpu-w8a8 gave the f32 image vector");
        let (_, by_vector, _) = post(&c, &search, &json!({"vector": want, "k": 40}));
        assert_eq!(scores(&v), scores(&by_vector), "w8a8 image");
    }
    srv.stop();
}
