//! CLIP's byte-level BPE tokenizer, equal to OpenAI's `SimpleTokenizer` + `clip.tokenize`
//! (ids, clean-up, pre-tokenisation, truncation), with the vocabulary taken from a model's
//! `tokenizer.json` / `vocab.json`+`merges.txt` or from the built-in OpenAI vocabulary.

mod clean;
mod html;
mod vocab;

use std::collections::HashMap;

use regex::Regex;

use crate::error::Result;
use crate::model_dir::TokenizerFiles;

pub use vocab::BUILTIN_VOCAB_GZ;

/// OpenAI CLIP's context length.
pub const CONTEXT_LENGTH: usize = 77;

const START: &str = "<|startoftext|>";
const END: &str = "<|endoftext|>";

/// A CLIP tokenizer. Cheap to share (`Send + Sync`, no interior state).
pub struct ClipTokenizer {
    encoder: HashMap<String, u32>,
    /// `(left id, right id)` -> `(merge rank, merged id)`.
    merges: HashMap<(u32, u32), (u32, u32)>,
    /// Byte -> id of the byte's unicode stand-in, and of the stand-in + `</w>`.
    byte_ids: [u32; 256],
    byte_end_ids: [u32; 256],
    pattern: Regex,
    start_id: u32,
    end_id: u32,
}

impl std::fmt::Debug for ClipTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClipTokenizer")
            .field("vocab", &self.encoder.len())
            .field("merges", &self.merges.len())
            .finish()
    }
}

/// OpenAI's `bytes_to_unicode`: printable bytes map to themselves, the rest to U+0100...
pub(crate) fn bytes_to_unicode() -> [(u8, char); 256] {
    let mut printable: Vec<u8> = (b'!'..=b'~')
        .chain(0xa1..=0xac)
        .chain(0xae..=0xff)
        .collect();
    let mut out = Vec::with_capacity(256);
    for &b in &printable {
        out.push((b, char::from(b)));
    }
    let mut n = 0u32;
    for b in 0..=255u8 {
        if !printable.contains(&b) {
            printable.push(b);
            out.push((b, char::from_u32(256 + n).unwrap_or('?')));
            n += 1;
        }
    }
    let mut arr = [(0u8, '\0'); 256];
    arr.copy_from_slice(&out);
    arr
}

impl ClipTokenizer {
    /// The built-in OpenAI vocabulary (`bpe_simple_vocab_16e6.txt.gz`).
    pub fn builtin() -> Result<Self> {
        let (vocab, merges) = vocab::builtin()?;
        Self::from_parts(vocab, merges, "built-in vocabulary")
    }

    /// The tokenizer a model directory calls for.
    pub fn from_files(files: &TokenizerFiles) -> Result<Self> {
        match files {
            TokenizerFiles::Builtin => Self::builtin(),
            TokenizerFiles::TokenizerJson(path) => {
                let (vocab, merges) = vocab::from_tokenizer_json(path)?;
                Self::from_parts(vocab, merges, &path.display().to_string())
            }
            TokenizerFiles::VocabMerges { vocab, merges } => {
                let (v, m) = vocab::from_vocab_merges(vocab, merges)?;
                Self::from_parts(v, m, &vocab.display().to_string())
            }
        }
    }

    fn from_parts(
        encoder: HashMap<String, u32>,
        merge_list: Vec<(String, String)>,
        source: &str,
    ) -> Result<Self> {
        let bad = |message: String| crate::error::EmbedderError::Config {
            path: source.into(),
            message,
        };
        let table = bytes_to_unicode();
        let mut byte_ids = [0u32; 256];
        let mut byte_end_ids = [0u32; 256];
        for (b, c) in table {
            let plain = c.to_string();
            let end = format!("{c}</w>");
            byte_ids[b as usize] = *encoder
                .get(&plain)
                .ok_or_else(|| bad(format!("vocabulary lacks byte symbol {plain:?}")))?;
            byte_end_ids[b as usize] = *encoder
                .get(&end)
                .ok_or_else(|| bad(format!("vocabulary lacks byte symbol {end:?}")))?;
        }
        let mut merges = HashMap::with_capacity(merge_list.len());
        for (rank, (a, b)) in merge_list.iter().enumerate() {
            let (Some(&ia), Some(&ib), Some(&im)) = (
                encoder.get(a),
                encoder.get(b),
                encoder.get(&format!("{a}{b}")),
            ) else {
                return Err(bad(format!(
                    "merge `{a} {b}` uses symbols outside the vocabulary"
                )));
            };
            // A repeated pair keeps its last rank, as a Python dict built from the list does.
            merges.insert((ia, ib), (rank as u32, im));
        }
        let start_id = *encoder
            .get(START)
            .ok_or_else(|| bad(format!("vocabulary lacks {START}")))?;
        let end_id = *encoder
            .get(END)
            .ok_or_else(|| bad(format!("vocabulary lacks {END}")))?;
        let pattern = Regex::new(
            r"(?i)<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+",
        )
        .map_err(|e| bad(format!("token pattern: {e}")))?;
        Ok(Self {
            encoder,
            merges,
            byte_ids,
            byte_end_ids,
            pattern,
            start_id,
            end_id,
        })
    }

    /// Id of `<|startoftext|>` (49406 in OpenAI's vocabulary).
    pub fn start_id(&self) -> u32 {
        self.start_id
    }

    /// Id of `<|endoftext|>` (49407 in OpenAI's vocabulary).
    pub fn end_id(&self) -> u32 {
        self.end_id
    }

    /// Number of entries in the vocabulary.
    pub fn vocab_size(&self) -> usize {
        self.encoder.len()
    }

    /// BPE ids of `text` without start/end tokens (OpenAI's `SimpleTokenizer.encode`).
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let cleaned = clean::clean(text);
        let mut ids = Vec::new();
        for m in self.pattern.find_iter(&cleaned) {
            let token = m.as_str();
            match token {
                START => ids.push(self.start_id),
                END => ids.push(self.end_id),
                _ => self.bpe(token.as_bytes(), &mut ids),
            }
        }
        ids
    }

    /// `clip.tokenize` without padding: start token, ids, end token; longer sequences are cut
    /// to `context_length` with the end token kept as the last id.
    pub fn tokenize(&self, text: &str, context_length: usize) -> Vec<u32> {
        let mut ids = Vec::with_capacity(context_length.min(80));
        ids.push(self.start_id);
        ids.extend(self.encode(text));
        ids.push(self.end_id);
        if ids.len() > context_length && context_length > 0 {
            ids.truncate(context_length);
            ids[context_length - 1] = self.end_id;
        }
        ids
    }

    /// Byte-level BPE of one pre-token, merging the lowest-ranked pair until none applies.
    fn bpe(&self, token: &[u8], out: &mut Vec<u32>) {
        let Some((&last, head)) = token.split_last() else {
            return;
        };
        let mut word: Vec<u32> = head.iter().map(|&b| self.byte_ids[b as usize]).collect();
        word.push(self.byte_end_ids[last as usize]);
        while word.len() > 1 {
            let best = word
                .windows(2)
                .filter_map(|w| {
                    self.merges
                        .get(&(w[0], w[1]))
                        .map(|m| (m.0, m.1, w[0], w[1]))
                })
                .min_by_key(|m| m.0);
            let Some((_, merged, first, second)) = best else {
                break;
            };
            let mut next = Vec::with_capacity(word.len());
            let mut i = 0;
            while i < word.len() {
                if i + 1 < word.len() && word[i] == first && word[i + 1] == second {
                    next.push(merged);
                    i += 2;
                } else {
                    next.push(word[i]);
                    i += 1;
                }
            }
            word = next;
        }
        out.extend(word);
    }
}

/// Writes the built-in vocabulary as a Hugging Face `tokenizer.json` (BPE model with `</w>`
/// suffix, the two special tokens as added tokens), for model directories that ship none.
pub fn write_tokenizer_json(path: &std::path::Path) -> Result<()> {
    let (encoder, merges) = vocab::builtin()?;
    let mut vocab: Vec<(&String, &u32)> = encoder.iter().collect();
    vocab.sort_by_key(|(_, id)| **id);
    let vocab: serde_json::Map<String, serde_json::Value> = vocab
        .into_iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::from(*v)))
        .collect();
    let merges: Vec<String> = merges.iter().map(|(a, b)| format!("{a} {b}")).collect();
    let added: Vec<serde_json::Value> = [START, END]
        .iter()
        .map(|t| {
            serde_json::json!({"id": encoder.get(*t), "content": t, "special": true,
                "single_word": false, "lstrip": false, "rstrip": false, "normalized": true})
        })
        .collect();
    let json = serde_json::json!({
        "version": "1.0",
        "added_tokens": added,
        "model": {
            "type": "BPE", "dropout": null, "unk_token": END, "continuing_subword_prefix": "",
            "end_of_word_suffix": "</w>", "fuse_unk": false, "vocab": vocab, "merges": merges,
        },
    });
    let text = serde_json::to_string(&json).map_err(|e| crate::error::EmbedderError::Write {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    std::fs::write(path, text).map_err(|e| crate::error::EmbedderError::Write {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_matches_known_openai_ids() {
        let tok = ClipTokenizer::builtin().unwrap();
        assert_eq!(tok.vocab_size(), 49408);
        assert_eq!((tok.start_id(), tok.end_id()), (49406, 49407));
        // clip.tokenize("a diagram") = [49406, 320, 22697, 49407]
        assert_eq!(
            tok.tokenize("a diagram", 77),
            vec![49406, 320, 22697, 49407]
        );
        assert_eq!(tok.tokenize("a dog", 77), vec![49406, 320, 1929, 49407]);
    }

    #[test]
    fn truncation_keeps_end_token() {
        let tok = ClipTokenizer::builtin().unwrap();
        let long = "word ".repeat(200);
        let ids = tok.tokenize(&long, 77);
        assert_eq!(ids.len(), 77);
        assert_eq!(ids[76], 49407);
        assert_eq!(tok.tokenize("", 77), vec![49406, 49407]);
    }

    #[test]
    fn byte_table_is_a_bijection() {
        let t = bytes_to_unicode();
        let mut chars: Vec<char> = t.iter().map(|p| p.1).collect();
        chars.sort_unstable();
        chars.dedup();
        assert_eq!(chars.len(), 256);
        assert_eq!(t[0], (b'!', '!'));
    }
}
