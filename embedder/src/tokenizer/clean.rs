//! Text clean-up of OpenAI's CLIP tokenizer: `ftfy.fix_text`, `html.unescape` twice,
//! whitespace collapsing and lower-casing.
//!
//! ftfy is re-implemented fix by fix (HTML entities, C1 controls, Latin ligatures, character
//! width, curly quotes, line breaks, terminal escapes, control characters, NFC), iterated to a
//! fixed point as ftfy does. Not re-implemented: ftfy's heuristic mojibake repair
//! (`fix_encoding`), which only changes text that was decoded with the wrong codec.

use std::collections::HashMap;
use std::sync::LazyLock;

use tokenizers::NormalizedString;

use super::html;

/// Full pipeline: `whitespace_clean(basic_clean(text)).lower()`.
pub(crate) fn clean(text: &str) -> String {
    let fixed = fix_text(text);
    let unescaped = html::unescape(&html::unescape(&fixed));
    let collapsed = unescaped
        .split(char::is_whitespace)
        .filter(|w| !w.is_empty());
    let mut out = String::with_capacity(unescaped.len());
    for (i, word) in collapsed.enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(word);
    }
    out.to_lowercase()
}

/// `ftfy.fix_text` with default settings, mojibake repair excepted.
pub(crate) fn fix_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut unescape_html = true;
    // ftfy fixes line by line; once a line holds '<' it stops decoding HTML for the rest.
    for segment in text.split_inclusive('\n') {
        if segment.contains('<') {
            unescape_html = false;
        }
        out.push_str(&fix_segment(segment, unescape_html));
    }
    out
}

fn fix_segment(segment: &str, unescape_html: bool) -> String {
    let mut text = segment.to_string();
    for _ in 0..16 {
        let orig = text.clone();
        if unescape_html {
            text = html::ftfy_unescape(&text);
        }
        text = fix_c1_controls(&text);
        text = text.chars().map(fix_char).collect::<Vec<_>>().concat();
        text = fix_line_breaks(&text);
        text = remove_terminal_escapes(&text);
        text.retain(|c| !is_control(c));
        text = nfc(&text);
        if text == orig {
            break;
        }
    }
    text
}

fn nfc(text: &str) -> String {
    let mut n = NormalizedString::from(text);
    n.nfc();
    n.get().to_string()
}

/// sloppy-windows-1252 decoding of C1 characters (undefined bytes map to themselves).
fn fix_c1_controls(text: &str) -> String {
    const CP1252: [char; 32] = [
        '\u{20ac}', '\u{81}', '\u{201a}', '\u{192}', '\u{201e}', '\u{2026}', '\u{2020}',
        '\u{2021}', '\u{2c6}', '\u{2030}', '\u{160}', '\u{2039}', '\u{152}', '\u{8d}', '\u{17d}',
        '\u{8f}', '\u{90}', '\u{2018}', '\u{2019}', '\u{201c}', '\u{201d}', '\u{2022}', '\u{2013}',
        '\u{2014}', '\u{2dc}', '\u{2122}', '\u{161}', '\u{203a}', '\u{153}', '\u{9d}', '\u{17e}',
        '\u{178}',
    ];
    text.chars()
        .map(|c| match c as u32 {
            cp @ 0x80..=0x9f => CP1252[(cp - 0x80) as usize],
            _ => c,
        })
        .collect()
}

/// Per-character fixes: ligatures, full/half width, curly quotes.
fn fix_char(c: char) -> String {
    if let Some(s) = LIGATURES.iter().find(|(l, _)| *l == c).map(|(_, s)| *s) {
        return s.to_string();
    }
    if let Some(s) = WIDTH_MAP.get(&c) {
        return s.clone();
    }
    match c {
        '\u{2bc}' | '\u{2018}'..='\u{201b}' => "'".to_string(),
        '\u{201c}'..='\u{201f}' => "\"".to_string(),
        _ => c.to_string(),
    }
}

const LIGATURES: [(char, &str); 22] = [
    ('\u{132}', "IJ"),
    ('\u{133}', "ij"),
    ('\u{149}', "\u{2bc}n"),
    ('\u{1f1}', "DZ"),
    ('\u{1f2}', "Dz"),
    ('\u{1f3}', "dz"),
    ('\u{1c4}', "D\u{17d}"),
    ('\u{1c5}', "D\u{17e}"),
    ('\u{1c6}', "d\u{17e}"),
    ('\u{1c7}', "LJ"),
    ('\u{1c8}', "Lj"),
    ('\u{1c9}', "lj"),
    ('\u{1ca}', "NJ"),
    ('\u{1cb}', "Nj"),
    ('\u{1cc}', "nj"),
    ('\u{fb00}', "ff"),
    ('\u{fb01}', "fi"),
    ('\u{fb02}', "fl"),
    ('\u{fb03}', "ffi"),
    ('\u{fb04}', "ffl"),
    ('\u{fb05}', "\u{17f}t"),
    ('\u{fb06}', "st"),
];

/// ftfy's width map: NFKC of U+FF01..U+FFEF where it differs, and U+3000 to a space.
static WIDTH_MAP: LazyLock<HashMap<char, String>> = LazyLock::new(|| {
    let mut map = HashMap::new();
    map.insert('\u{3000}', " ".to_string());
    for cp in 0xff01..0xfff0u32 {
        let Some(c) = char::from_u32(cp) else {
            continue;
        };
        let mut n = NormalizedString::from(c.to_string().as_str());
        n.nfkc();
        if n.get() != c.to_string() {
            map.insert(c, n.get().to_string());
        }
    }
    map
});

fn fix_line_breaks(text: &str) -> String {
    text.replace("\r\n", "\n")
        .replace(['\r', '\u{2028}', '\u{2029}', '\u{85}'], "\n")
}

/// Removes ANSI sequences `ESC [ [0-9;]* [A-Za-z]`.
fn remove_terminal_escapes(text: &str) -> String {
    if !text.contains('\u{1b}') {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find("\u{1b}[") {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 2..];
        let params = after
            .bytes()
            .take_while(|b| b.is_ascii_digit() || *b == b';')
            .count();
        match after.as_bytes().get(params) {
            Some(b) if b.is_ascii_alphabetic() => rest = &after[params + 1..],
            _ => {
                out.push_str(&rest[pos..pos + 2]);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// ftfy's `CONTROL_CHARS`.
fn is_control(c: char) -> bool {
    matches!(c as u32,
        0x00..=0x08 | 0x0b | 0x0e..=0x1f | 0x7f | 0x206a..=0x206f | 0xfeff | 0xfff9..=0xfffc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans_like_openai() {
        assert_eq!(clean("  A  Photo\tof\n a CAT "), "a photo of a cat");
        assert_eq!(clean("ﬁsh &amp;amp; chips"), "fish & chips");
        assert_eq!(clean("\u{201c}hi\u{201d} it\u{2019}s"), "\"hi\" it's");
        assert_eq!(clean("ＡＢＣ\u{3000}１２"), "abc 12");
        assert_eq!(clean("cafe\u{301}"), "caf\u{e9}");
        assert_eq!(clean("\u{1b}[31mred\u{1b}[0m"), "red");
        assert_eq!(clean("a\u{85}b"), "a\u{2026}b");
    }
}
