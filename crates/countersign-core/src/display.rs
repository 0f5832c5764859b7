//! How agent-supplied values are shown to reviewers, in every channel: hidden characters become
//! visible marks (`⟨U+202E⟩`), and each value is isolated so that right-to-left text in it
//! cannot reorder what surrounds it.
use serde_json::Value;

use crate::validate::is_hidden;

/// First Strong Isolate: opens a run whose direction comes from its own text.
pub const FSI: char = '\u{2068}';
/// Pop Directional Isolate: closes it.
pub const PDI: char = '\u{2069}';

/// The text with every hidden character except line breaks and tabs shown as `⟨U+XXXX⟩`.
pub fn visible(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if is_hidden(c) && !matches!(c, '\n' | '\t') {
            out.push_str(&format!("⟨U+{:04X}⟩", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// A piece of pretty-printed JSON: its syntax (and keys), or one value (a string with its
/// quotes, or a number).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Syntax(String),
    Value(String),
}

/// Pretty JSON (two-space indent) split into pieces, hidden characters made visible.
pub fn json_pieces(value: &Value) -> Vec<Piece> {
    let mut out = Vec::new();
    pieces(value, 0, &mut out);
    out
}

fn syntax(out: &mut Vec<Piece>, text: &str) {
    if let Some(Piece::Syntax(last)) = out.last_mut() {
        last.push_str(text);
    } else {
        out.push(Piece::Syntax(text.to_string()));
    }
}

fn quoted(text: &str) -> String {
    visible(&serde_json::to_string(text).unwrap_or_default())
}

fn pieces(value: &Value, depth: usize, out: &mut Vec<Piece>) {
    let indent = |d: usize| "  ".repeat(d);
    match value {
        Value::Object(map) if map.is_empty() => syntax(out, "{}"),
        Value::Array(items) if items.is_empty() => syntax(out, "[]"),
        Value::Object(map) => {
            syntax(out, "{\n");
            for (i, (key, item)) in map.iter().enumerate() {
                syntax(out, &format!("{}{}: ", indent(depth + 1), quoted(key)));
                pieces(item, depth + 1, out);
                syntax(out, if i + 1 < map.len() { ",\n" } else { "\n" });
            }
            syntax(out, &format!("{}}}", indent(depth)));
        }
        Value::Array(items) => {
            syntax(out, "[\n");
            for (i, item) in items.iter().enumerate() {
                syntax(out, &indent(depth + 1));
                pieces(item, depth + 1, out);
                syntax(out, if i + 1 < items.len() { ",\n" } else { "\n" });
            }
            syntax(out, &format!("{}]", indent(depth)));
        }
        Value::String(s) => out.push(Piece::Value(quoted(s))),
        Value::Number(n) => out.push(Piece::Value(n.to_string())),
        Value::Bool(b) => syntax(out, if *b { "true" } else { "false" }),
        Value::Null => syntax(out, "null"),
    }
}

/// Pretty JSON as plain text for messages (email, Slack, Teams, push): each value between
/// FSI and PDI, hidden characters visible, cut at about `max` characters (never inside a
/// value's isolate).
pub fn json_text(value: &Value, max: usize) -> String {
    let mut out = String::new();
    let mut used = 0;
    for piece in json_pieces(value) {
        let (text, isolated) = match &piece {
            Piece::Syntax(t) => (t.as_str(), false),
            Piece::Value(t) => (t.as_str(), true),
        };
        let len = text.chars().count();
        if used + len > max {
            if !isolated {
                out.extend(text.chars().take(max.saturating_sub(used)));
            }
            out.push('…');
            return out;
        }
        used += len;
        if isolated {
            out.push(FSI);
            out.push_str(text);
            out.push(PDI);
        } else {
            out.push_str(text);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn hidden_characters_become_marks() {
        assert_eq!(visible("a\u{202E}b\u{200B}c\nd"), "a⟨U+202E⟩b⟨U+200B⟩c\nd");
        assert_eq!(visible("שלום"), "שלום");
    }

    #[test]
    fn pieces_read_as_pretty_json() {
        let v = json!({"b": [1, "x"], "a": {"c": null, "d": true}, "e": {}});
        let text: String = json_pieces(&v)
            .into_iter()
            .map(|p| match p {
                Piece::Syntax(t) | Piece::Value(t) => t,
            })
            .collect();
        assert_eq!(text, serde_json::to_string_pretty(&v).unwrap());
    }

    #[test]
    fn values_are_isolated_and_marked_in_text() {
        let text = json_text(&json!({"to": "evil\u{202E}cod.exe", "n": 5}), 1000);
        assert_eq!(
            text,
            "{\n  \"n\": \u{2068}5\u{2069},\n  \"to\": \u{2068}\"evil⟨U+202E⟩cod.exe\"\u{2069}\n}"
        );
        let cut = json_text(&json!({"to": "a long value here"}), 12);
        assert!(cut.ends_with('…') && !cut.contains(FSI), "{cut}");
    }
}
