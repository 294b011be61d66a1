//! INI files read as Python's `configparser` reads them with the options ukify 257 passes
//! (`comment_prefixes='#'`, `inline_comment_prefixes='#'`, `delimiters='='`,
//! `empty_lines_in_values=False`, `interpolation=None`, `strict=False`, keys kept as written),
//! so that an existing `ukify.conf` means the same to bootchain as to ukify.
//!
//! The rules (CPython `Lib/configparser.py`, `RawConfigParser._read` and
//! `_join_multiline_values`):
//! - a line whose stripped text starts with `#` is a comment; an inline `#` starts a comment
//!   only at the start of the line or after whitespace;
//! - a blank line (after comments are cut) ends a multi-line value;
//! - a line indented deeper than the key line continues the value (joined with `\n`);
//! - `[NAME]` opens a section (text after the closing `]` is ignored, as Python's regex
//!   matches a prefix); a repeated section continues the earlier one;
//! - `KEY = VALUE` splits at the first `=`; surrounding whitespace is stripped; a repeated key
//!   replaces the earlier value; a line without `=` is an error;
//! - keys of `[DEFAULT]` are inherited by every other section.
//!
//! Work is linear in the input; the input size is the caller's to bound.

use std::collections::BTreeMap;

/// The section whose keys every section inherits (configparser's `default_section`).
pub const DEFAULT_SECTION: &str = "DEFAULT";

/// A parse error, with the 1-based line number as configparser reports it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigParseError {
    /// A key line before any `[SECTION]` (configparser's `MissingSectionHeaderError`).
    #[error("line {line}: a key before any [SECTION] header")]
    MissingSectionHeader {
        /// The line.
        line: usize,
    },
    /// A line that is neither a section, a key nor a continuation (`ParsingError`).
    #[error("line {line}: expected KEY=VALUE or [SECTION]")]
    Malformed {
        /// The line.
        line: usize,
    },
}

/// One section: keys in first-appearance order with their final values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigSection {
    /// The section's name as written between the brackets.
    pub name: String,
    /// Keys and values, in the order keys first appeared (a repeated key keeps its place and
    /// takes the later value, as a Python dict does). Inherited `[DEFAULT]` keys follow the
    /// section's own.
    pub entries: Vec<(String, String)>,
}

impl ConfigSection {
    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// A parsed file: `[DEFAULT]` first (if present), then the sections in first-appearance order,
/// as `ConfigParser.items()` yields them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    /// The sections.
    pub sections: Vec<ConfigSection>,
}

#[derive(Default)]
struct RawSection {
    name: String,
    /// key -> lines of the value.
    keys: Vec<(String, Vec<String>)>,
}

impl RawSection {
    fn set(&mut self, key: String, first: String) -> usize {
        match self.keys.iter().position(|(k, _)| *k == key) {
            Some(i) => {
                self.keys[i].1 = vec![first];
                i
            }
            None => {
                self.keys.push((key, vec![first]));
                self.keys.len() - 1
            }
        }
    }

    fn joined(&self) -> Vec<(String, String)> {
        self.keys
            .iter()
            .map(|(k, lines)| (k.clone(), lines.join("\n").trim_end().to_string()))
            .collect()
    }
}

/// Where inline comments start: the first `#` at the start or after whitespace.
fn cut_comment(line: &str) -> &str {
    if line.trim().starts_with('#') {
        return "";
    }
    let bytes = line.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'#'
            && (i == 0
                || line[..i]
                    .chars()
                    .next_back()
                    .is_some_and(char::is_whitespace))
        {
            return &line[..i];
        }
    }
    line
}

/// Parse `text` with ukify's configparser settings.
pub fn parse(text: &str) -> Result<Config, ConfigParseError> {
    let mut default = RawSection {
        name: DEFAULT_SECTION.to_string(),
        ..RawSection::default()
    };
    let mut saw_default = false;
    let mut sections: Vec<RawSection> = Vec::new();
    // The section being filled: None before the first header, Some(None) for DEFAULT.
    let mut cur: Option<Option<usize>> = None;
    // The key a continuation line would extend: (section slot, key index).
    let mut key: Option<usize> = None;
    let mut indent_level = usize::MAX;
    // Python's str.splitlines() also splits at \r, \x0b, \x0c, \x1c-\x1e, \x85, U+2028/9, but
    // configparser iterates a file object, which splits at \n only (universal newlines turn
    // \r\n and \r into \n first).
    let normalised = text.replace("\r\n", "\n").replace('\r', "\n");
    for (n, line) in normalised.split_terminator('\n').enumerate() {
        let lineno = n + 1;
        let value = cut_comment(line).trim();
        if value.is_empty() {
            indent_level = usize::MAX;
            continue;
        }
        let cur_indent = line.len() - line.trim_start().len();
        if let (Some(slot), Some(k)) = (cur, key) {
            if cur_indent > indent_level {
                let section = match slot {
                    Some(i) => &mut sections[i],
                    None => &mut default,
                };
                section.keys[k].1.push(value.to_string());
                continue;
            }
        }
        indent_level = cur_indent;
        if let Some(name) = section_header(value) {
            key = None;
            if name == DEFAULT_SECTION {
                saw_default = true;
                cur = Some(None);
            } else if let Some(i) = sections.iter().position(|s| s.name == name) {
                cur = Some(Some(i));
            } else {
                sections.push(RawSection {
                    name: name.to_string(),
                    ..RawSection::default()
                });
                cur = Some(Some(sections.len() - 1));
            }
            continue;
        }
        let Some(slot) = cur else {
            return Err(ConfigParseError::MissingSectionHeader { line: lineno });
        };
        let Some((k, v)) = value.split_once('=') else {
            return Err(ConfigParseError::Malformed { line: lineno });
        };
        let k = k.trim_end();
        if k.is_empty() {
            return Err(ConfigParseError::Malformed { line: lineno });
        }
        let section = match slot {
            Some(i) => &mut sections[i],
            None => &mut default,
        };
        key = Some(section.set(k.to_string(), v.trim().to_string()));
    }
    let defaults = default.joined();
    let mut out = Vec::with_capacity(sections.len() + 1);
    if saw_default {
        out.push(ConfigSection {
            name: DEFAULT_SECTION.to_string(),
            entries: defaults.clone(),
        });
    }
    for s in &sections {
        let mut entries = s.joined();
        for (k, v) in &defaults {
            if !entries.iter().any(|(ek, _)| ek == k) {
                entries.push((k.clone(), v.clone()));
            }
        }
        out.push(ConfigSection {
            name: s.name.clone(),
            entries,
        });
    }
    Ok(Config { sections: out })
}

/// `[NAME]` with Python's `\[(?P<header>.+)\]` matched at the start: the name runs to the
/// last `]` of the line, and must not be empty.
fn section_header(value: &str) -> Option<&str> {
    let rest = value.strip_prefix('[')?;
    let end = rest.rfind(']')?;
    let name = &rest[..end];
    (!name.is_empty()).then_some(name)
}

/// Python's `configparser` boolean words as ukify's `parse_boolean` takes them
/// (`1 true yes y t on` / `0 false no n f off`, any case).
pub fn parse_boolean(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "y" | "t" | "on" => Some(true),
        "0" | "false" | "no" | "n" | "f" | "off" => Some(false),
        _ => None,
    }
}

impl Config {
    /// The section called `name`.
    pub fn section(&self, name: &str) -> Option<&ConfigSection> {
        self.sections.iter().find(|s| s.name == name)
    }

    /// All values as a map, for tests and debugging.
    pub fn to_map(&self) -> BTreeMap<String, BTreeMap<String, String>> {
        self.sections
            .iter()
            .map(|s| (s.name.clone(), s.entries.iter().cloned().collect()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_continuations_and_defaults() {
        let c = parse(
            "# top\n[DEFAULT]\nD = 1\n[UKI]\nLinux = /a#b  # comment\nInitrd = x\n  y\n\n  z = 2\n[UKI]\nLinux=/c\n",
        )
        .unwrap();
        let uki = c.section("UKI").unwrap();
        assert_eq!(uki.get("Linux"), Some("/c"));
        assert_eq!(uki.get("Initrd"), Some("x\ny"));
        assert_eq!(uki.get("z"), Some("2"));
        assert_eq!(uki.get("D"), Some("1"));
        assert_eq!(c.sections[0].name, "DEFAULT");
    }

    #[test]
    fn errors_name_the_line() {
        assert_eq!(
            parse("Linux=/a\n"),
            Err(ConfigParseError::MissingSectionHeader { line: 1 })
        );
        assert_eq!(
            parse("[UKI]\n\nno delimiter\n"),
            Err(ConfigParseError::Malformed { line: 3 })
        );
        assert_eq!(
            parse("[UKI]\n= value\n"),
            Err(ConfigParseError::Malformed { line: 2 })
        );
    }

    #[test]
    fn booleans() {
        assert_eq!(parse_boolean("Yes"), Some(true));
        assert_eq!(parse_boolean("off"), Some(false));
        assert_eq!(parse_boolean("maybe"), None);
    }
}
