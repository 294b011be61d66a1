//! `ukify.conf`: ukify 257's configuration file, read with ukify's sections and keys so that an
//! existing configuration works unchanged with `bootchain uki build`.
//!
//! Facts from ukify 257 (`/usr/lib/systemd/ukify`, `CONFIG_ITEMS` and `apply_config`):
//! - the file is parsed by Python's `configparser` (see [`crate::base::configparser`]);
//! - `[UKI]` holds the build's keys, `[PCRSignature:NAME]` one PCR signing group each (named
//!   groups follow the command line's `--pcr-private-key` groups, in order of first appearance);
//! - the command line wins for every single-valued key; `Initrd=` and `DeviceTreeAuto=` are
//!   whitespace-separated lists put *before* the command line's; `SecureBootCertificateDir=` and
//!   `SecureBootCertificateValidity=` override the command line; `SBAT=` never takes effect
//!   (ukify's `--sbat` default is an empty list, not unset);
//! - paths are relative to the working directory, not to the file;
//! - an unknown `[SECTION] KEY` is reported, not refused;
//! - without `--config`, the first `ukify.conf` found in [`DEFAULT_CONFIG_DIRS`] is used.

use std::path::{Path, PathBuf};

use crate::base::configparser::{self, ConfigParseError};

/// Where ukify looks for [`DEFAULT_CONFIG_FILE`] when no `--config` is given, in order.
pub const DEFAULT_CONFIG_DIRS: [&str; 4] = [
    "/etc/systemd",
    "/run/systemd",
    "/usr/local/lib/systemd",
    "/usr/lib/systemd",
];

/// ukify's configuration file name.
pub const DEFAULT_CONFIG_FILE: &str = "ukify.conf";

/// A configuration larger than this is refused (a real one is a few hundred bytes).
pub const MAX_CONFIG_SIZE: u64 = 1 << 20;

/// Errors reading a `ukify.conf`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UkifyConfigError {
    /// The file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_CONFIG_SIZE`].
    #[error("{path} is larger than {MAX_CONFIG_SIZE} bytes")]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// The file is not UTF-8.
    #[error("{path} is not UTF-8 text")]
    NotUtf8 {
        /// The file.
        path: PathBuf,
    },
    /// configparser syntax.
    #[error("{path}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// Where and what.
        #[source]
        source: ConfigParseError,
    },
    /// A `[Section:NAME]` with an empty part or a second `:` (ukify: "Section name
    /// components cannot be empty", "Section name cannot contain more than one ':'").
    #[error("[{0}]: a section name is SECTION or SECTION:NAME with both parts non-empty")]
    SectionName(String),
    /// A value ukify would not convert.
    #[error("[{section}] {key}={value}: {reason}")]
    Value {
        /// The section.
        section: String,
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// What was expected.
        reason: &'static str,
    },
}

/// One `[PCRSignature:NAME]` group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PcrSignatureGroup {
    /// The group's name (after the `:`).
    pub name: String,
    /// `PCRPrivateKey=`.
    pub private_key: Option<PathBuf>,
    /// `PCRPublicKey=`.
    pub public_key: Option<PathBuf>,
    /// `Phases=`, as written (split like `--phases`).
    pub phases: Option<String>,
}

/// The settings of a `ukify.conf`, typed as ukify converts them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct UkifyConfig {
    /// `Linux=`.
    pub linux: Option<PathBuf>,
    /// `OSRelease=` (TEXT or @PATH).
    pub os_release: Option<String>,
    /// `Cmdline=` (TEXT or @PATH).
    pub cmdline: Option<String>,
    /// `Initrd=`: come before the command line's `--initrd`s.
    pub initrd: Vec<PathBuf>,
    /// `Microcode=`.
    pub microcode: Option<PathBuf>,
    /// `Splash=`.
    pub splash: Option<PathBuf>,
    /// `DeviceTree=`.
    pub devicetree: Option<PathBuf>,
    /// `DeviceTreeAuto=`: come before the command line's.
    pub devicetree_auto: Vec<PathBuf>,
    /// `HWIDs=`.
    pub hwids: Option<PathBuf>,
    /// `Uname=`.
    pub uname: Option<String>,
    /// `SBAT=`: read, and ignored as ukify 257 ignores it.
    pub sbat: Option<String>,
    /// `PCRPKey=`.
    pub pcrpkey: Option<PathBuf>,
    /// `Profile=` (TEXT or @PATH).
    pub profile: Option<String>,
    /// `EFIArch=`.
    pub efi_arch: Option<String>,
    /// `Stub=`.
    pub stub: Option<PathBuf>,
    /// `PCRBanks=`, as written.
    pub pcr_banks: Option<String>,
    /// `SigningEngine=` (an OpenSSL engine; not supported by bootchain).
    pub signing_engine: Option<String>,
    /// `SigningProvider=` (an OpenSSL provider; not supported by bootchain).
    pub signing_provider: Option<String>,
    /// `CertificateProvider=` (not supported by bootchain).
    pub certificate_provider: Option<String>,
    /// `SecureBootSigningTool=`.
    pub signtool: Option<String>,
    /// `SecureBootPrivateKey=`.
    pub sb_key: Option<PathBuf>,
    /// `SecureBootCertificate=`.
    pub sb_cert: Option<PathBuf>,
    /// `SecureBootCertificateDir=` (pesign's NSS database; overrides the command line).
    pub sb_cert_dir: Option<PathBuf>,
    /// `SecureBootCertificateName=` (a pesign nickname; not supported by bootchain).
    pub sb_cert_name: Option<String>,
    /// `SecureBootCertificateValidity=` in days (genkey; overrides the command line).
    pub sb_cert_validity: Option<u32>,
    /// `SignKernel=`.
    pub sign_kernel: Option<bool>,
    /// `[PCRSignature:NAME]` groups in order of first appearance.
    pub pcr_groups: Vec<PcrSignatureGroup>,
    /// `[SECTION] KEY=` settings ukify does not know; ukify prints `Unknown config setting
    /// [SECTION] KEY=` for each and goes on.
    pub unknown: Vec<(String, String)>,
}

impl UkifyConfig {
    /// Read and convert a configuration file.
    pub fn from_file(path: &Path) -> Result<Self, UkifyConfigError> {
        let read = |source| UkifyConfigError::Read {
            path: path.to_path_buf(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(read)?;
        if meta.len() > MAX_CONFIG_SIZE {
            return Err(UkifyConfigError::TooLarge {
                path: path.to_path_buf(),
            });
        }
        let bytes = std::fs::read(path).map_err(read)?;
        if bytes.len() as u64 > MAX_CONFIG_SIZE {
            return Err(UkifyConfigError::TooLarge {
                path: path.to_path_buf(),
            });
        }
        let text = String::from_utf8(bytes).map_err(|_| UkifyConfigError::NotUtf8 {
            path: path.to_path_buf(),
        })?;
        Self::parse(&text).map_err(|e| match e {
            UkifyConfigError::Syntax { source, .. } => UkifyConfigError::Syntax {
                path: path.to_path_buf(),
                source,
            },
            other => other,
        })
    }

    /// Convert the text of a configuration file.
    pub fn parse(text: &str) -> Result<Self, UkifyConfigError> {
        let cp = configparser::parse(text).map_err(|source| UkifyConfigError::Syntax {
            path: PathBuf::new(),
            source,
        })?;
        let mut c = UkifyConfig::default();
        for section in &cp.sections {
            let (kind, group) = match section.name.split_once(':') {
                Some((kind, group)) => {
                    if group.is_empty() || group.contains(':') {
                        return Err(UkifyConfigError::SectionName(section.name.clone()));
                    }
                    (kind, Some(group))
                }
                None => (section.name.as_str(), None),
            };
            for (key, value) in &section.entries {
                let known = match (kind, group) {
                    ("UKI", None) => c.set_uki(key, value)?,
                    ("PCRSignature", Some(g)) => c.set_group(g, key, value),
                    _ => false,
                };
                if !known {
                    c.unknown.push((section.name.clone(), key.clone()));
                }
            }
        }
        Ok(c)
    }

    /// The configuration ukify would use: `explicit` if given, else the first
    /// [`DEFAULT_CONFIG_FILE`] that is a file in one of `dirs` (normally
    /// [`DEFAULT_CONFIG_DIRS`]). `None` when there is none.
    pub fn locate(explicit: Option<&Path>, dirs: &[&Path]) -> Option<PathBuf> {
        if let Some(p) = explicit {
            return Some(p.to_path_buf());
        }
        dirs.iter()
            .map(|d| d.join(DEFAULT_CONFIG_FILE))
            .find(|p| p.is_file())
    }

    fn set_uki(&mut self, key: &str, value: &str) -> Result<bool, UkifyConfigError> {
        let path = || Some(PathBuf::from(value));
        let text = || Some(value.to_string());
        let list = || value.split_whitespace().map(PathBuf::from).collect();
        let bad = |reason| UkifyConfigError::Value {
            section: "UKI".into(),
            key: key.into(),
            value: value.into(),
            reason,
        };
        match key {
            "Linux" => self.linux = path(),
            "OSRelease" => self.os_release = text(),
            "Cmdline" => self.cmdline = text(),
            "Initrd" => self.initrd = list(),
            "Microcode" => self.microcode = path(),
            "Splash" => self.splash = path(),
            "DeviceTree" => self.devicetree = path(),
            "DeviceTreeAuto" => self.devicetree_auto = list(),
            "HWIDs" => self.hwids = path(),
            "Uname" => self.uname = text(),
            "SBAT" => self.sbat = text(),
            "PCRPKey" => self.pcrpkey = path(),
            "Profile" => self.profile = text(),
            "EFIArch" => self.efi_arch = text(),
            "Stub" => self.stub = path(),
            "PCRBanks" => self.pcr_banks = text(),
            "SigningEngine" => self.signing_engine = text(),
            "SigningProvider" => self.signing_provider = text(),
            "CertificateProvider" => self.certificate_provider = text(),
            "SecureBootSigningTool" => self.signtool = text(),
            "SecureBootPrivateKey" => self.sb_key = path(),
            "SecureBootCertificate" => self.sb_cert = path(),
            "SecureBootCertificateDir" => self.sb_cert_dir = path(),
            "SecureBootCertificateName" => self.sb_cert_name = text(),
            "SecureBootCertificateValidity" => {
                self.sb_cert_validity =
                    Some(value.trim().parse().map_err(|_| bad("expected days"))?)
            }
            "SignKernel" => {
                self.sign_kernel =
                    Some(configparser::parse_boolean(value).ok_or_else(|| {
                        bad("expected a boolean (yes/no, true/false, 1/0, on/off)")
                    })?)
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn set_group(&mut self, name: &str, key: &str, value: &str) -> bool {
        if !matches!(key, "PCRPrivateKey" | "PCRPublicKey" | "Phases") {
            return false;
        }
        let slot = match self.pcr_groups.iter().position(|g| g.name == name) {
            Some(i) => i,
            None => {
                self.pcr_groups.push(PcrSignatureGroup {
                    name: name.to_string(),
                    ..PcrSignatureGroup::default()
                });
                self.pcr_groups.len() - 1
            }
        };
        let g = &mut self.pcr_groups[slot];
        match key {
            "PCRPrivateKey" => g.private_key = Some(PathBuf::from(value)),
            "PCRPublicKey" => g.public_key = Some(PathBuf::from(value)),
            _ => g.phases = Some(value.to_string()),
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ukify_example_config() {
        let c = UkifyConfig::parse(
            "[UKI]\nLinux=/boot/vmlinuz\nInitrd=/a /b\n  /c\nCmdline=root=LABEL=r ro\nSignKernel=yes\nBogus=1\n\n\
             [PCRSignature:initrd]\nPCRPrivateKey=/k1\nPhases=enter-initrd\n\
             [PCRSignature:system]\nPCRPrivateKey=/k2\nPCRPublicKey=/p2\nPhases=enter-initrd:leave-initrd\n  enter-initrd:leave-initrd:sysinit\n",
        )
        .unwrap();
        assert_eq!(c.linux.as_deref(), Some(Path::new("/boot/vmlinuz")));
        assert_eq!(c.initrd.len(), 3);
        assert_eq!(c.sign_kernel, Some(true));
        assert_eq!(c.pcr_groups.len(), 2);
        assert_eq!(
            c.pcr_groups[1].public_key.as_deref(),
            Some(Path::new("/p2"))
        );
        assert_eq!(c.unknown, vec![("UKI".to_string(), "Bogus".to_string())]);
    }

    #[test]
    fn bad_values_and_sections() {
        assert!(matches!(
            UkifyConfig::parse("[UKI]\nSignKernel=perhaps\n"),
            Err(UkifyConfigError::Value { .. })
        ));
        assert!(matches!(
            UkifyConfig::parse("[PCRSignature:]\nPhases=x\n"),
            Err(UkifyConfigError::SectionName(_))
        ));
        assert!(matches!(
            UkifyConfig::parse("[PCRSignature:a:b]\n"),
            Err(UkifyConfigError::SectionName(_))
        ));
        assert!(matches!(
            UkifyConfig::parse("Linux=/x\n"),
            Err(UkifyConfigError::Syntax { .. })
        ));
    }
}
