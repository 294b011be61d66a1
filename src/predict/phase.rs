//! Boot phase paths: the words systemd-pcrphase extends into PCR 11 after the stub.
//!
//! A path is a list of words joined by `:` ("enter-initrd:leave-initrd"). The empty path is
//! the state right after the stub, before any phase word: what an initrd without
//! systemd-pcrphase sees. systemd-measure normalises paths by dropping empty words
//! (`"::enter-initrd"` is `"enter-initrd"`) and sorts them as strings; [`Phase`] keeps that
//! normal form, so two equal paths compare equal and sort as systemd-measure emits them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The phases systemd-measure signs by default (`systemd-pcrphase` units).
pub const DEFAULT_PHASES: &[&str] = &[
    "enter-initrd",
    "enter-initrd:leave-initrd",
    "enter-initrd:leave-initrd:sysinit",
    "enter-initrd:leave-initrd:sysinit:ready",
];

/// The phases `uki build` signs by default: the initrd ones only, where disk keys are
/// released — right after the stub (an initrd without systemd-pcrphase) and systemd's
/// `enter-initrd`. Signing later phases would let the booted system unseal disk keys again.
pub const INITRD_PHASES: &[&str] = &["", "enter-initrd"];

/// A phase word is not printable ASCII.
#[derive(Debug, thiserror::Error)]
#[error("invalid boot phase path {path:?}: words must be printable ASCII")]
pub struct PhaseError {
    /// The path as given.
    pub path: String,
}

/// A normalised boot phase path (see the module documentation).
///
/// ```
/// use bootchain::measure::Phase;
/// let p: Phase = "enter-initrd::leave-initrd".parse()?;
/// assert_eq!(p.to_string(), "enter-initrd:leave-initrd");
/// assert_eq!(p.words().count(), 2);
/// assert!(Phase::after_stub().is_after_stub());
/// # Ok::<(), bootchain::measure::PhaseError>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Phase(String);

impl Phase {
    /// Right after the stub, before any phase word.
    pub fn after_stub() -> Self {
        Phase(String::new())
    }

    /// Parse and normalise a path.
    pub fn parse(path: &str) -> Result<Self, PhaseError> {
        let words: Vec<&str> = path.split(':').filter(|w| !w.is_empty()).collect();
        if words
            .iter()
            .any(|w| !w.bytes().all(|b| b.is_ascii_graphic()))
        {
            return Err(PhaseError { path: path.into() });
        }
        Ok(Phase(words.join(":")))
    }

    /// The words, in the order systemd-pcrphase extends them.
    pub fn words(&self) -> impl Iterator<Item = &str> {
        self.0.split(':').filter(|w| !w.is_empty())
    }

    /// Whether this is the state right after the stub.
    pub fn is_after_stub(&self) -> bool {
        self.0.is_empty()
    }

    /// The normalised path ("" right after the stub).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Parse, normalise, sort and de-duplicate paths (the order systemd-measure emits).
    pub fn list<S: AsRef<str>>(paths: &[S]) -> Result<Vec<Phase>, PhaseError> {
        let mut v = paths
            .iter()
            .map(|p| Phase::parse(p.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        v.sort();
        v.dedup();
        Ok(v)
    }

    /// systemd-measure's default phases.
    pub fn defaults() -> Vec<Phase> {
        DEFAULT_PHASES
            .iter()
            .map(|p| Phase(p.to_string()))
            .collect()
    }

    /// The initrd phases `uki build` signs by default ([`INITRD_PHASES`]).
    pub fn initrd() -> Vec<Phase> {
        INITRD_PHASES.iter().map(|p| Phase(p.to_string())).collect()
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Phase {
    type Err = PhaseError;
    fn from_str(s: &str) -> Result<Self, PhaseError> {
        Phase::parse(s)
    }
}

impl Serialize for Phase {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Phase {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Phase::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_form_and_order() {
        assert_eq!(Phase::parse(":a::b:").unwrap().as_str(), "a:b");
        assert!(Phase::parse("a b").is_err());
        assert!(Phase::parse("a:\u{e9}").is_err());
        // Sorted as strings, as systemd-measure does: "a:b" after "a-c".
        let l = Phase::list(&["a:b", "a-c", "a-c", ""]).unwrap();
        let s: Vec<&str> = l.iter().map(Phase::as_str).collect();
        assert_eq!(s, ["", "a-c", "a:b"]);
        assert_eq!(Phase::defaults().len(), DEFAULT_PHASES.len());
    }
}
