//! Output as Python writes it, for byte-identical compatibility with ukify: `json.dumps` with
//! its default `ensure_ascii=True` (compact with `", "`/`": "` separators, or `indent=N`),
//! and the `str.rstrip()` / `textwrap.indent()` used by `ukify inspect`.

use std::io::{self, Write};

use serde::Serialize;
use serde_json::ser::{Formatter, PrettyFormatter};

/// Python's `json.dumps(value)` (`indent` = None) or `json.dumps(value, indent=n)`: default
/// separators, non-ASCII and DEL escaped as `\uXXXX` (UTF-16 surrogate pairs above U+FFFF),
/// no trailing newline. Object keys keep their order.
pub fn json_dumps<T: Serialize + ?Sized>(
    value: &T,
    indent: Option<usize>,
) -> Result<String, serde_json::Error> {
    let mut out = Vec::new();
    match indent {
        None => {
            let mut ser = serde_json::Serializer::with_formatter(&mut out, Ascii(Compact));
            value.serialize(&mut ser)?;
        }
        Some(n) => {
            let ind = vec![b' '; n];
            let mut ser = serde_json::Serializer::with_formatter(
                &mut out,
                Ascii(PrettyFormatter::with_indent(&ind)),
            );
            value.serialize(&mut ser)?;
        }
    }
    // The formatter writes ASCII only.
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Python's compact separators: `", "` between items and `": "` after keys.
struct Compact;

impl Formatter for Compact {
    fn begin_array_value<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }
    fn begin_object_key<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }
    fn begin_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }
}

/// A formatter with `ensure_ascii`: string fragments escape everything outside `' '..='~'`
/// (serde_json already escapes `"`, `\` and control characters, as Python does).
struct Ascii<F>(F);

impl<F: Formatter> Formatter for Ascii<F> {
    fn begin_array<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_array(w)
    }
    fn end_array<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_array(w)
    }
    fn begin_array_value<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        self.0.begin_array_value(w, first)
    }
    fn end_array_value<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_array_value(w)
    }
    fn begin_object<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_object(w)
    }
    fn end_object<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_object(w)
    }
    fn begin_object_key<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        self.0.begin_object_key(w, first)
    }
    fn end_object_key<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_object_key(w)
    }
    fn begin_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_object_value(w)
    }
    fn end_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_object_value(w)
    }
    fn write_string_fragment<W: ?Sized + Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        for c in fragment.chars() {
            if (' '..='~').contains(&c) {
                w.write_all(&[c as u8])?;
            } else {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    write!(w, "\\u{u:04x}")?;
                }
            }
        }
        Ok(())
    }
}

/// Python's `str.isspace()` for one character: Unicode White_Space plus the information
/// separators U+001C..U+001F.
pub fn py_isspace(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `str.rstrip()`.
pub fn py_rstrip(s: &str) -> &str {
    s.trim_end_matches(py_isspace)
}

/// Python's `str.splitlines(keepends=True)`.
fn splitlines_keepends(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut it = s.char_indices().peekable();
    while let Some((i, c)) = it.next() {
        let end = match c {
            '\r' => match it.peek() {
                Some(&(j, '\n')) => {
                    it.next();
                    j + 1
                }
                _ => i + 1,
            },
            '\n' | '\u{b}' | '\u{c}' | '\u{1c}' | '\u{1d}' | '\u{1e}' | '\u{85}' | '\u{2028}'
            | '\u{2029}' => i + c.len_utf8(),
            _ => continue,
        };
        out.push(&s[start..end]);
        start = end;
    }
    if start < s.len() {
        out.push(&s[start..]);
    }
    out
}

/// Python's `textwrap.indent(text, prefix)`: `prefix` before every line that is not
/// whitespace only.
pub fn textwrap_indent(text: &str, prefix: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in splitlines_keepends(text) {
        if line.chars().any(|c| !py_isspace(c)) {
            out.push_str(prefix);
        }
        out.push_str(line);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dumps_like_python() {
        let v =
            serde_json::json!({"a": [1, 2], "b": {"c": "x\u{e9}\u{1f600}\u{7f}\n\"\\/"}, "e": {}});
        // json.dumps(v)
        assert_eq!(
            json_dumps(&v, None).unwrap(),
            r#"{"a": [1, 2], "b": {"c": "x\u00e9\ud83d\ude00\u007f\n\"\\/"}, "e": {}}"#
        );
        // json.dumps(v, indent=4)
        assert_eq!(
            json_dumps(&v, Some(4)).unwrap(),
            "{\n    \"a\": [\n        1,\n        2\n    ],\n    \"b\": {\n        \"c\": \"x\\u00e9\\ud83d\\ude00\\u007f\\n\\\"\\\\/\"\n    },\n    \"e\": {}\n}"
        );
    }

    #[test]
    fn textwrap_like_python() {
        // textwrap.indent("a\n\n  \nb\r\nc\x1cd", "    ")
        assert_eq!(
            textwrap_indent("a\n\n  \nb\r\nc\u{1c}d", "    "),
            "    a\n\n  \n    b\r\n    c\u{1c}    d"
        );
        assert_eq!(py_rstrip("x \n\u{1f}\u{a0}"), "x");
    }
}
