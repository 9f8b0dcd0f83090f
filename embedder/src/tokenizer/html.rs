//! HTML character-reference decoding equal to Python's `html.unescape` (HTML5 rules, the
//! full named-entity table) and to ftfy's stricter `unescape_html` fix.

use std::collections::HashMap;
use std::sync::LazyLock;

/// `html.entities.html5` (name, with or without `;`, to replacement text).
static HTML5: LazyLock<HashMap<&'static str, String>> = LazyLock::new(|| {
    include_str!("../../assets/html5_entities.tsv")
        .lines()
        .filter_map(|line| {
            let (name, cps) = line.split_once('\t')?;
            let text: Option<String> = cps
                .split(' ')
                .map(|h| u32::from_str_radix(h, 16).ok().and_then(char::from_u32))
                .collect();
            Some((name, text?))
        })
        .collect()
});

/// ftfy's `HTML_ENTITIES`: `&name;` for every html5 name ending in `;`, plus upper-cased
/// variants of lower-case names whose upper-case spelling is not itself an entity.
static FTFY_ENTITIES: LazyLock<HashMap<String, String>> = LazyLock::new(|| {
    let mut map = HashMap::new();
    for (name, text) in HTML5.iter() {
        if !name.ends_with(';') {
            continue;
        }
        map.insert(format!("&{name}"), text.clone());
        if *name == name.to_lowercase() {
            let upper = format!("&{}", name.to_uppercase());
            if unescape(&upper) == upper {
                map.insert(upper, python_upper(text));
            }
        }
    }
    map
});

fn python_upper(s: &str) -> String {
    s.to_uppercase()
}

/// Windows-1252 meanings that HTML5 gives numeric references 0x80..=0x9F (and 0, CR).
fn invalid_charref(num: u64) -> Option<&'static str> {
    const C1: [&str; 32] = [
        "\u{20ac}", "\u{81}", "\u{201a}", "\u{192}", "\u{201e}", "\u{2026}", "\u{2020}",
        "\u{2021}", "\u{2c6}", "\u{2030}", "\u{160}", "\u{2039}", "\u{152}", "\u{8d}", "\u{17d}",
        "\u{8f}", "\u{90}", "\u{2018}", "\u{2019}", "\u{201c}", "\u{201d}", "\u{2022}", "\u{2013}",
        "\u{2014}", "\u{2dc}", "\u{2122}", "\u{161}", "\u{203a}", "\u{153}", "\u{9d}", "\u{17e}",
        "\u{178}",
    ];
    match num {
        0 => Some("\u{fffd}"),
        13 => Some("\r"),
        0x80..=0x9f => Some(C1[(num - 0x80) as usize]),
        _ => None,
    }
}

/// Code points HTML5 drops from numeric references.
fn invalid_codepoint(n: u64) -> bool {
    matches!(n, 0x1..=0x8 | 0xb | 0xe..=0x1f | 0x7f..=0x9f | 0xfdd0..=0xfdef)
        || (n <= 0x10ffff && (n & 0xfffe) == 0xfffe)
}

fn numeric_ref(digits: &str, radix: u32) -> String {
    // Python parses arbitrarily long numbers; anything past u64 is simply "too large".
    let num = u64::from_str_radix(digits, radix).unwrap_or(u64::MAX);
    if let Some(s) = invalid_charref(num) {
        return s.to_string();
    }
    if (0xd800..=0xdfff).contains(&num) || num > 0x10ffff {
        return "\u{fffd}".to_string();
    }
    if invalid_codepoint(num) {
        return String::new();
    }
    char::from_u32(num as u32)
        .map(String::from)
        .unwrap_or_default()
}

/// Length in bytes of the reference body after `&` per Python's `_charref` pattern, or None.
fn match_charref(rest: &str) -> Option<usize> {
    let bytes = rest.as_bytes();
    if let Some(after) = rest.strip_prefix('#') {
        let (digits_len, prefix) = if after.starts_with(['x', 'X']) {
            let n = after[1..].bytes().take_while(u8::is_ascii_hexdigit).count();
            (n, 2)
        } else {
            (after.bytes().take_while(u8::is_ascii_digit).count(), 1)
        };
        if digits_len == 0 {
            return None;
        }
        let end = prefix + digits_len;
        return Some(if bytes.get(end) == Some(&b';') {
            end + 1
        } else {
            end
        });
    }
    let mut end = 0;
    for (count, (i, c)) in rest.char_indices().enumerate() {
        if count == 32 || matches!(c, '\t' | '\n' | '\u{c}' | ' ' | '<' | '&' | '#' | ';') {
            break;
        }
        end = i + c.len_utf8();
    }
    if end == 0 {
        return None;
    }
    Some(if bytes.get(end) == Some(&b';') {
        end + 1
    } else {
        end
    })
}

fn replace_charref(body: &str) -> String {
    if let Some(num) = body.strip_prefix('#') {
        let num = num.trim_end_matches(';');
        return match num.strip_prefix(['x', 'X']) {
            Some(hex) => numeric_ref(hex, 16),
            None => numeric_ref(num, 10),
        };
    }
    if let Some(text) = HTML5.get(body) {
        return text.clone();
    }
    // Longest prefix (at least 2 chars) that is an entity, as the HTML5 standard says.
    let bounds: Vec<usize> = body.char_indices().map(|(i, _)| i).collect();
    for x in (2..bounds.len()).rev() {
        if let Some(text) = HTML5.get(&body[..bounds[x]]) {
            return format!("{text}{}", &body[bounds[x]..]);
        }
    }
    format!("&{body}")
}

/// Python's `html.unescape`.
pub(crate) fn unescape(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('&') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        match match_charref(after) {
            Some(len) => {
                out.push_str(&replace_charref(&after[..len]));
                rest = &after[len..];
            }
            None => {
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// ftfy's `unescape_html`: only `&#?[0-9A-Za-z]{1,24};` references, named ones from its table,
/// numeric ones through `html.unescape` unless that leaves a `;`.
pub(crate) fn ftfy_unescape(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('&') {
        out.push_str(&rest[..pos]);
        let cand = &rest[pos..];
        let body = cand[1..].strip_prefix('#').unwrap_or(&cand[1..]);
        let hash = body.len() != cand.len() - 1;
        let n = body.bytes().take_while(u8::is_ascii_alphanumeric).count();
        if (1..=24).contains(&n) && body.as_bytes().get(n) == Some(&b';') {
            let len = 1 + usize::from(hash) + n + 1;
            let entity = &cand[..len];
            if let Some(text) = FTFY_ENTITIES.get(entity) {
                out.push_str(text);
            } else if hash {
                let un = unescape(entity);
                out.push_str(if un.contains(';') { entity } else { &un });
            } else {
                out.push_str(entity);
            }
            rest = &cand[len..];
        } else {
            out.push('&');
            rest = &cand[1..];
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_unescape_cases() {
        assert_eq!(unescape("a &amp; b"), "a & b");
        assert_eq!(unescape("&amp;amp;"), "&amp;");
        assert_eq!(unescape("&ampfoo"), "&foo");
        assert_eq!(unescape("&notit;"), "\u{ac}it;");
        assert_eq!(unescape("&#65;&#x42;&#X43"), "ABC");
        assert_eq!(unescape("&#128;"), "\u{20ac}");
        assert_eq!(unescape("&#0;"), "\u{fffd}");
        assert_eq!(unescape("&#1;x"), "x");
        assert_eq!(unescape("&#99999999999999999999999;"), "\u{fffd}");
        assert_eq!(unescape("& &; &#; &#x;"), "& &; &#; &#x;");
        assert_eq!(unescape("caf&eacute;"), "caf\u{e9}");
    }

    #[test]
    fn ftfy_unescape_cases() {
        assert_eq!(ftfy_unescape("&amp;"), "&");
        assert_eq!(ftfy_unescape("&amp"), "&amp");
        assert_eq!(ftfy_unescape("&EACUTE;"), "\u{c9}");
        assert_eq!(ftfy_unescape("&#233;"), "\u{e9}");
        assert_eq!(ftfy_unescape("&bogus;"), "&bogus;");
    }
}
