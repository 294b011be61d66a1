//! Printing errors with their causes. Every error type of this crate keeps its cause as
//! `source()` and does not repeat it in its own message, so a message is printed once:
//! [`Chain`] joins the messages of an error and of its sources with ": ", as anyhow's `{:#}`
//! does for the CLI.

use std::fmt;

/// Displays an error followed by each of its sources: "reading x: permission denied".
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'a));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut last = self.0.to_string();
        f.write_str(&last)?;
        let mut cur = self.0.source();
        while let Some(c) = cur {
            // Some foreign errors (tss-esapi's response codes) return themselves, or a copy of
            // their own message, as their source: print each message once.
            let msg = c.to_string();
            if msg != last {
                write!(f, ": {msg}")?;
                last = msg;
            }
            cur = c.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_source_once() {
        let e = crate::fsutil::read_bounded(std::path::Path::new("/nonexistent/x"), 1)
            .map_err(|source| crate::keys::KeyError::Read {
                path: "/nonexistent/x".into(),
                source,
            })
            .unwrap_err();
        let s = Chain(&e).to_string();
        assert!(s.starts_with("cannot read /nonexistent/x: "), "{s}");
        assert_eq!(s.matches("No such file").count(), 1, "{s}");
    }
}
