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

    /// No error in the chain repeats its source's message in its own.
    pub(crate) fn assert_no_repeats(e: &(dyn std::error::Error + 'static)) {
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
        while let Some(c) = cur {
            if let Some(s) = c.source() {
                let (mine, theirs) = (c.to_string(), s.to_string());
                assert!(
                    mine == theirs || !mine.contains(&theirs),
                    "{mine:?} repeats its source {theirs:?}"
                );
            }
            cur = c.source();
        }
    }

    #[test]
    fn typed_errors_keep_sources_and_print_them_once() {
        let cert =
            crate::keys::certificate_from_bytes(b"\x30\x03\x02\x01\x01", "c.der").unwrap_err();
        assert!(std::error::Error::source(&cert).is_some());
        assert_no_repeats(&cert);
        assert!(
            Chain(&cert)
                .to_string()
                .starts_with("c.der is not a readable X.509 certificate: "),
            "{}",
            Chain(&cert)
        );
        let key = crate::keys::SigningKey::from_bytes(
            b"-----BEGIN PRIVATE KEY-----\nMAMCAQA=\n-----END PRIVATE KEY-----\n",
            "k.pem",
        )
        .unwrap_err();
        assert_no_repeats(&key);
        let sigs = crate::measure::parse_signatures(b"{\"sha256\": 5}").unwrap_err();
        assert!(std::error::Error::source(&sigs).is_some());
        assert_no_repeats(&sigs);
        let pcrs = crate::pcr::parse_pcr_values_json(r#"{"sha256": {"x": "00"}}"#).unwrap_err();
        assert!(
            Chain(&pcrs).to_string().contains("invalid digit"),
            "{}",
            Chain(&pcrs)
        );
        assert_no_repeats(&pcrs);
    }

    #[cfg(feature = "tpm")]
    #[test]
    fn envelope_errors_keep_sources() {
        let e = crate::seal::Envelope::from_json("not json").unwrap_err();
        let s = Chain(&e).to_string();
        assert!(s.starts_with("malformed sealed envelope: "), "{s}");
        assert_no_repeats(&e);
    }
}
