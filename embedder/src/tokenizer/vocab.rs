//! Vocabulary sources: OpenAI's merges file, `tokenizer.json`, `vocab.json` + `merges.txt`.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use super::{END, START, bytes_to_unicode};
use crate::error::{EmbedderError, Result, io_err};

/// OpenAI's `bpe_simple_vocab_16e6.txt.gz` (MIT, shipped by open_clip), the default vocabulary.
pub static BUILTIN_VOCAB_GZ: &[u8] = include_bytes!("../../assets/bpe_simple_vocab_16e6.txt.gz");

/// Merges OpenAI's tokenizer uses: lines `1 .. 49152-256-2+1` of the file.
const OPENAI_MERGES: usize = 49152 - 256 - 2;

type Vocab = (HashMap<String, u32>, Vec<(String, String)>);

fn bad(path: &Path, message: impl Into<String>) -> EmbedderError {
    EmbedderError::Config {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Vocabulary and merges exactly as `SimpleTokenizer.__init__` builds them.
pub(crate) fn builtin() -> Result<Vocab> {
    let path = Path::new("<built-in bpe_simple_vocab_16e6.txt.gz>");
    let mut text = String::new();
    flate2::read::GzDecoder::new(BUILTIN_VOCAB_GZ)
        .read_to_string(&mut text)
        .map_err(io_err(path))?;
    openai_merges_file(&text, path)
}

fn openai_merges_file(text: &str, path: &Path) -> Result<Vocab> {
    let merges: Vec<(String, String)> = text
        .split('\n')
        .skip(1)
        .take(OPENAI_MERGES)
        .map(|line| {
            let mut parts = line.split_whitespace();
            match (parts.next(), parts.next()) {
                (Some(a), Some(b)) => Ok((a.to_string(), b.to_string())),
                _ => Err(bad(path, format!("bad merge line `{line}`"))),
            }
        })
        .collect::<Result<_>>()?;
    let bytes: Vec<String> = bytes_to_unicode().iter().map(|p| p.1.to_string()).collect();
    let mut vocab: Vec<String> = bytes.clone();
    vocab.extend(bytes.iter().map(|b| format!("{b}</w>")));
    vocab.extend(merges.iter().map(|(a, b)| format!("{a}{b}")));
    vocab.push(START.to_string());
    vocab.push(END.to_string());
    let mut encoder = HashMap::with_capacity(vocab.len());
    for (id, sym) in vocab.into_iter().enumerate() {
        // Later duplicates overwrite, as `dict(zip(vocab, range(len(vocab))))` does.
        encoder.insert(sym, id as u32);
    }
    Ok((encoder, merges))
}

fn parse_merge(value: &serde_json::Value) -> Option<(String, String)> {
    match value {
        serde_json::Value::String(s) => {
            let (a, b) = s.split_once(' ')?;
            Some((a.to_string(), b.to_string()))
        }
        serde_json::Value::Array(pair) if pair.len() == 2 => {
            Some((pair[0].as_str()?.to_string(), pair[1].as_str()?.to_string()))
        }
        _ => None,
    }
}

fn parse_vocab(value: Option<&serde_json::Value>, path: &Path) -> Result<HashMap<String, u32>> {
    let map = value
        .and_then(|v| v.as_object())
        .ok_or_else(|| bad(path, "no vocabulary object"))?;
    map.iter()
        .map(|(k, v)| {
            v.as_u64()
                .and_then(|id| u32::try_from(id).ok())
                .map(|id| (k.clone(), id))
                .ok_or_else(|| bad(path, format!("bad id for token {k:?}")))
        })
        .collect()
}

fn read_json(path: &Path) -> Result<serde_json::Value> {
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    serde_json::from_slice(&bytes).map_err(|e| bad(path, e.to_string()))
}

/// BPE model of a Hugging Face `tokenizer.json`, with its added (special) tokens.
pub(crate) fn from_tokenizer_json(path: &Path) -> Result<Vocab> {
    let json = read_json(path)?;
    let model = json
        .get("model")
        .ok_or_else(|| bad(path, "no `model` section"))?;
    if let Some(kind) = model.get("type").and_then(|t| t.as_str())
        && kind != "BPE"
    {
        return Err(bad(
            path,
            format!("tokenizer model is {kind}, CLIP needs BPE"),
        ));
    }
    let mut encoder = parse_vocab(model.get("vocab"), path)?;
    let merges = model
        .get("merges")
        .and_then(|m| m.as_array())
        .ok_or_else(|| bad(path, "no merges list"))?
        .iter()
        .map(|m| parse_merge(m).ok_or_else(|| bad(path, format!("bad merge {m}"))))
        .collect::<Result<Vec<_>>>()?;
    if let Some(added) = json.get("added_tokens").and_then(|a| a.as_array()) {
        for tok in added {
            if let (Some(content), Some(id)) = (
                tok.get("content").and_then(|c| c.as_str()),
                tok.get("id").and_then(|i| i.as_u64()),
            ) {
                let id = u32::try_from(id).map_err(|_| bad(path, "added token id too large"))?;
                encoder.insert(content.to_string(), id);
            }
        }
    }
    Ok((encoder, merges))
}

/// `vocab.json` + `merges.txt` (first line `#version: ...`).
pub(crate) fn from_vocab_merges(vocab: &Path, merges: &Path) -> Result<Vocab> {
    let encoder = parse_vocab(Some(&read_json(vocab)?), vocab)?;
    let text = std::fs::read_to_string(merges).map_err(io_err(merges))?;
    let merges_list = text
        .lines()
        .filter(|l| !l.starts_with("#version") && !l.trim().is_empty())
        .map(|l| {
            l.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.trim_end().to_string()))
                .ok_or_else(|| bad(merges, format!("bad merge line `{l}`")))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((encoder, merges_list))
}
