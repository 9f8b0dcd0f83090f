//! Search: `POST /v1/collections/{c}/search` (text, vector, image or id)
//! and `GET /search?q=...`.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::header;
use base64::Engine;
use glimpse_storage::{Collection, Filter, Hit, SearchRequest, SearchTimings, report_f32};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::blocking;
use super::points::{id_from_json, meta_json, vector_from_json};
use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult};
use crate::filter_json::parse_filter;
use crate::metrics::METRICS;
use crate::state::AppState;

/// What to search with.
#[derive(Debug)]
pub enum QueryInput {
    /// Free text, embedded with the CLIP text tower.
    Text(String),
    /// A raw query vector.
    Vector(Vec<f32>),
    /// Encoded image bytes, embedded with the CLIP image tower.
    Image(Vec<u8>),
    /// "More like this": the stored vector of a point.
    Id(String),
}

/// Body of `POST /v1/collections/{c}/search`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchBody {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    vector: Option<Vec<f64>>,
    #[serde(default)]
    image_base64: Option<String>,
    #[serde(default)]
    id: Option<Value>,
    #[serde(default)]
    k: Option<usize>,
    #[serde(default)]
    filter: Option<Value>,
    #[serde(default)]
    nprobe: Option<usize>,
    #[serde(default)]
    refine: Option<usize>,
    #[serde(default)]
    recall_target: Option<f64>,
    #[serde(default)]
    rescore: Option<String>,
}

/// Knobs shared by every query kind.
#[derive(Debug, Default)]
pub struct SearchKnobs {
    /// Results wanted.
    pub k: Option<usize>,
    /// Parsed filter.
    pub filter: Option<Filter>,
    /// IVF lists to probe.
    pub nprobe: Option<usize>,
    /// Re-rank depth multiplier.
    pub refine: Option<usize>,
    /// Recall@k to aim at (checked in [`run_search`]).
    pub recall_target: Option<f64>,
    /// `always`, `auto` or `never` (checked in [`run_search`]; the server's `--rescore` when
    /// absent).
    pub rescore: Option<String>,
}

/// One result as answered.
#[derive(Debug, Serialize)]
pub struct ResultOut {
    id: String,
    score: f32,
    image_path: Option<String>,
    image_url: String,
    metadata: Value,
}

/// A search answer with its timings.
#[derive(Debug, Serialize)]
pub struct SearchOut {
    /// Collection searched.
    pub collection: String,
    /// Best first.
    pub results: Vec<ResultOut>,
    /// Milliseconds by stage.
    pub took_ms: Value,
    /// The recall target searched at and the recall the segments' tables promised for it.
    pub recall: Value,
}

/// Default number of results.
pub const DEFAULT_K: usize = 10;

impl SearchBody {
    fn into_parts(self) -> Result<(QueryInput, SearchKnobs), ApiError> {
        let given = [
            self.text.is_some(),
            self.vector.is_some(),
            self.image_base64.is_some(),
            self.id.is_some(),
        ]
        .iter()
        .filter(|x| **x)
        .count();
        if given != 1 {
            return Err(ApiError::invalid(
                "invalid_query",
                "give exactly one of `text`, `vector`, `image_base64`, `id`",
            ));
        }
        let input = if let Some(t) = self.text {
            QueryInput::Text(t)
        } else if let Some(v) = self.vector {
            QueryInput::Vector(vector_from_json(&v, "query vector")?)
        } else if let Some(b) = self.image_base64 {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .map_err(|e| ApiError::invalid("invalid_image", format!("image_base64: {e}")))?;
            QueryInput::Image(bytes)
        } else if let Some(id) = self.id {
            QueryInput::Id(id_from_json(&id)?)
        } else {
            return Err(ApiError::internal("unreachable query kind"));
        };
        let filter = match self.filter {
            None | Some(Value::Null) => None,
            Some(f) => Some(
                parse_filter(&f).map_err(|e| ApiError::invalid("invalid_filter", e.to_string()))?,
            ),
        };
        Ok((
            input,
            SearchKnobs {
                k: self.k,
                filter,
                nprobe: self.nprobe,
                refine: self.refine,
                recall_target: self.recall_target,
                rescore: self.rescore,
            },
        ))
    }
}

/// Runs one search end to end: embeds the query when needed, searches the
/// collection off the async threads, and records stage timings.
pub async fn run_search(
    state: &Arc<AppState>,
    coll: Arc<Collection>,
    input: QueryInput,
    knobs: SearchKnobs,
) -> ApiResult<SearchOut> {
    let started = Instant::now();
    let k = knobs.k.unwrap_or(DEFAULT_K);
    if k == 0 || k > state.config.max_k {
        return Err(ApiError::invalid(
            "invalid_k",
            format!("k must be between 1 and {}, got {k}", state.config.max_k),
        ));
    }
    if let Some(n) = knobs.nprobe
        && (n == 0 || n > 65_536)
    {
        return Err(ApiError::invalid(
            "invalid_nprobe",
            "nprobe must be 1..=65536",
        ));
    }
    if let Some(r) = knobs.refine
        && (r == 0 || r > 1_000)
    {
        return Err(ApiError::invalid(
            "invalid_refine",
            "refine must be 1..=1000",
        ));
    }
    let recall_target = check_recall_target(knobs.recall_target)?;
    let rescore = check_rescore(knobs.rescore.as_deref(), state.config.rescore)?;
    let mut embed_ms = 0.0;
    let mut queue_ms = 0.0;
    let query: Vec<f32> = match input {
        QueryInput::Vector(v) => v,
        QueryInput::Text(t) => {
            let t = t.trim().to_string();
            if t.is_empty() {
                return Err(ApiError::invalid("invalid_text", "the query text is empty"));
            }
            let chars = t.chars().count();
            if chars > state.config.max_text_chars {
                return Err(ApiError::invalid(
                    "invalid_text",
                    format!(
                        "the query text has {chars} characters; the limit is {}",
                        state.config.max_text_chars
                    ),
                ));
            }
            let model = state.model()?.clone();
            let t0 = Instant::now();
            let e = blocking(move || model.embed_text_timed(&t)).await?;
            if e.cache_hit {
                METRICS.query_cache_hits_total.inc();
            } else {
                METRICS.query_cache_misses_total.inc();
            }
            let secs = t0.elapsed().as_secs_f64();
            METRICS
                .search_stage_seconds
                .with_label_values(&["embed"])
                .observe(secs);
            embed_ms = secs * 1e3;
            queue_ms = e.queue.as_secs_f64() * 1e3;
            e.vector.to_vec()
        }
        QueryInput::Image(bytes) => {
            let model = state.model()?.clone();
            let t0 = Instant::now();
            let e = blocking(move || model.embed_image_timed(&bytes)).await?;
            let secs = t0.elapsed().as_secs_f64();
            METRICS
                .search_stage_seconds
                .with_label_values(&["embed"])
                .observe(secs);
            embed_ms = secs * 1e3;
            queue_ms = e.queue.as_secs_f64() * 1e3;
            e.vector
        }
        QueryInput::Id(id) => {
            let c = coll.clone();
            let name = coll.name().to_string();
            blocking(move || {
                c.get(&id).map(|p| p.vector).ok_or_else(|| {
                    ApiError::not_found(format!("point {id:?} not found in {name:?}"))
                })
            })
            .await?
        }
    };
    if query.len() != coll.dim() {
        return Err(ApiError::invalid(
            "dimension_mismatch",
            format!(
                "the query has {} dimensions but collection {:?} has {}",
                query.len(),
                coll.name(),
                coll.dim()
            ),
        ));
    }
    let req = SearchRequest {
        k,
        nprobe: knobs.nprobe,
        refine: knobs.refine,
        recall_target,
        filter: knobs.filter,
        rescore,
    };
    let c = coll.clone();
    let t1 = Instant::now();
    let (hits, timings): (Vec<Hit>, SearchTimings) =
        blocking(move || c.search_with_stats(&query, &req).map_err(ApiError::from)).await?;
    let search_secs = t1.elapsed().as_secs_f64();
    let stage = |name: &str, secs: f64| {
        METRICS
            .search_stage_seconds
            .with_label_values(&[name])
            .observe(secs)
    };
    stage("search", search_secs);
    // Only stages that ran: a histogram of zeros would hide the real distribution.
    if timings.indexed_segments > 0 {
        stage("ann_scan", timings.ann_scan.as_secs_f64());
        stage("rerank", timings.rerank.as_secs_f64());
    }
    if timings.exact_rows > 0 {
        stage("exact_scan", timings.exact_scan.as_secs_f64());
    }
    let total = started.elapsed().as_secs_f64();
    METRICS
        .search_stage_seconds
        .with_label_values(&["total"])
        .observe(total);
    let name = coll.name().to_string();
    let results = hits
        .into_iter()
        .map(|h| ResultOut {
            image_url: format!("/images/{}/{}", name, url_escape(&h.id)),
            id: h.id,
            score: h.score,
            image_path: h.image_path,
            metadata: meta_json(&h.metadata),
        })
        .collect();
    Ok(SearchOut {
        collection: name,
        results,
        took_ms: json!({
            "embed": embed_ms,
            "queue": queue_ms,
            "search": search_secs * 1e3,
            "ann_scan": timings.ann_scan.as_secs_f64() * 1e3,
            "rerank": timings.rerank.as_secs_f64() * 1e3,
            "exact_scan": timings.exact_scan.as_secs_f64() * 1e3,
            "total": total * 1e3,
        }),
        recall: json!({
            "target": report_f32(recall_target.unwrap_or(glimpse_index::DEFAULT_RECALL_TARGET)),
            "by_hand": knobs.nprobe.is_some() || knobs.refine.is_some(),
            "rescore": rescore.as_str(),
            // Raw vectors read: the indexed segments' re-rank candidates and every exactly
            // scanned row (memtables, segments without an index, `recall_target` 1).
            "raw_rows_read": timings.reranked + timings.exact_rows,
            // Exact scans (memtables, segments without an index, recall_target 1) promise 1.
            "expected": (timings.uncalibrated_segments == 0)
                .then(|| report_f32(timings.expected_recall.unwrap_or(1.0))),
            "uncalibrated_segments": timings.uncalibrated_segments,
        }),
    })
}

/// The `rescore` a request names, else the server's default; a clear 400 for anything else.
pub fn check_rescore(
    given: Option<&str>,
    default: glimpse_storage::Rescore,
) -> Result<glimpse_storage::Rescore, ApiError> {
    match given {
        None => Ok(default),
        Some(s) => s
            .trim()
            .parse()
            .map_err(|e: String| ApiError::invalid("invalid_rescore", e)),
    }
}

/// Checks a requested recall target: a number in (0, 1].
pub fn check_recall_target(t: Option<f64>) -> Result<Option<f32>, ApiError> {
    match t {
        None => Ok(None),
        // Checked as the f32 the engine gets: 1e-46 would become 0.
        Some(t) if t.is_finite() && (t as f32) > 0.0 && t <= 1.0 => Ok(Some(t as f32)),
        Some(t) => Err(ApiError::invalid(
            "invalid_recall_target",
            format!("recall_target must be a number in (0, 1] (1 searches exactly), got {t}"),
        )),
    }
}

/// Percent-escapes an id for use as one URL path segment.
pub fn url_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub(super) async fn search_collection(
    State(state): State<Arc<AppState>>,
    ApiPath(name): ApiPath<String>,
    req: Request,
) -> ApiResult<Json<SearchOut>> {
    let coll = state.collection(&name)?;
    let is_multipart = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    let (input, knobs) = if is_multipart {
        let mp = Multipart::from_request(req, &state)
            .await
            .map_err(|e| ApiError::invalid("invalid_multipart", e.body_text()))?;
        multipart_query(mp).await?
    } else {
        let ApiJson(body) = ApiJson::<SearchBody>::from_request(req, &state).await?;
        body.into_parts()?
    };
    Ok(Json(run_search(&state, coll, input, knobs).await?))
}

/// Reads an image upload (`image` or `file` field) plus optional `k`,
/// `filter` (JSON text), `nprobe`, `refine`, `recall_target` fields.
async fn multipart_query(mut mp: Multipart) -> Result<(QueryInput, SearchKnobs), ApiError> {
    let mut image = None;
    let mut knobs = SearchKnobs::default();
    let bad = |e: axum::extract::multipart::MultipartError| {
        ApiError::invalid("invalid_multipart", e.body_text())
    };
    while let Some(field) = mp.next_field().await.map_err(bad)? {
        let name = field.name().unwrap_or("").to_string();
        match name.as_str() {
            "image" | "file" => image = Some(field.bytes().await.map_err(bad)?.to_vec()),
            "k" | "nprobe" | "refine" => {
                let text = field.text().await.map_err(bad)?;
                let n: usize = text.trim().parse().map_err(|_| {
                    ApiError::invalid("invalid_query", format!("{name} must be an integer"))
                })?;
                match name.as_str() {
                    "k" => knobs.k = Some(n),
                    "nprobe" => knobs.nprobe = Some(n),
                    _ => knobs.refine = Some(n),
                }
            }
            "rescore" => knobs.rescore = Some(field.text().await.map_err(bad)?),
            "recall_target" => {
                let text = field.text().await.map_err(bad)?;
                let t: f64 = text.trim().parse().map_err(|_| {
                    ApiError::invalid("invalid_recall_target", "recall_target must be a number")
                })?;
                knobs.recall_target = Some(t);
            }
            "filter" => {
                let text = field.text().await.map_err(bad)?;
                let v: Value = serde_json::from_str(&text)
                    .map_err(|e| ApiError::invalid("invalid_filter", e.to_string()))?;
                knobs.filter = Some(
                    parse_filter(&v)
                        .map_err(|e| ApiError::invalid("invalid_filter", e.to_string()))?,
                );
            }
            other => {
                return Err(ApiError::invalid(
                    "invalid_multipart",
                    format!("unknown form field {other:?}"),
                ));
            }
        }
    }
    let image = image.ok_or_else(|| {
        ApiError::invalid("invalid_multipart", "the form has no `image` file field")
    })?;
    Ok((QueryInput::Image(image), knobs))
}

/// Query string of `GET /search`.
#[derive(Debug, Deserialize)]
pub struct SearchQueryString {
    q: Option<String>,
    k: Option<usize>,
    collection: Option<String>,
    nprobe: Option<usize>,
    refine: Option<usize>,
    recall_target: Option<f64>,
    rescore: Option<String>,
}

pub(super) async fn search_get(
    State(state): State<Arc<AppState>>,
    ApiQuery(qs): ApiQuery<SearchQueryString>,
) -> ApiResult<Json<SearchOut>> {
    let q =
        qs.q.ok_or_else(|| ApiError::invalid("invalid_text", "missing `q` (the query text)"))?;
    let coll = state.default_collection(qs.collection.as_deref())?;
    let knobs = SearchKnobs {
        k: qs.k,
        filter: None,
        nprobe: qs.nprobe,
        refine: qs.refine,
        recall_target: qs.recall_target,
        rescore: qs.rescore,
    };
    Ok(Json(
        run_search(&state, coll, QueryInput::Text(q), knobs).await?,
    ))
}
