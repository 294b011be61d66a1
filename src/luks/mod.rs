//! LUKS2 headers: read in process ([`header`]), changed through the `cryptsetup` command
//! (Debian's cryptsetup-bin, 2.6).
//!
//! Why the command and not libcryptsetup bindings: `libcryptsetup-rs` needs bindgen and libclang
//! at build time and would link libcryptsetup into every program using this crate, including
//! the lean initramfs binary; every image that holds a LUKS2 volume already ships `cryptsetup`,
//! and cryptsetup's own header writing (two metadata copies, sequence ids, locking) is what
//! keeps a header intact when a step fails. Reading needs none of that, so it costs a read
//! instead of a `luksDump` process. Secrets reach cryptsetup only on its stdin
//! (`--key-file -` / `--new-keyfile -`), never on the command line or in temporary files.

pub mod header;
pub mod token;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Errors from LUKS2 operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LuksError {
    /// cryptsetup could not be run.
    #[error("cannot run {program} (install cryptsetup-bin)")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        source: std::io::Error,
    },
    /// cryptsetup failed.
    #[error("cryptsetup {action} on {device} failed (exit {status}): {stderr}")]
    Failed {
        /// What we asked.
        action: &'static str,
        /// The device.
        device: String,
        /// Exit status.
        status: i32,
        /// Its message.
        stderr: String,
    },
    /// The passphrase does not open the keyslot.
    #[error("the passphrase does not open {what} of {device}")]
    WrongPassphrase {
        /// "keyslot N" or "any keyslot".
        what: String,
        /// The device.
        device: String,
    },
    /// The header metadata is not what LUKS2 specifies.
    #[error("unexpected LUKS2 metadata in {device}")]
    Metadata {
        /// The device.
        device: String,
        /// What was wrong.
        #[source]
        source: MetadataError,
    },
    /// The binary header could not be read or is not LUKS2.
    #[error("cannot read the LUKS2 header of {device}")]
    Header {
        /// The device.
        device: String,
        /// Why.
        #[source]
        source: header::HeaderError,
    },
    /// A token could not be serialised.
    #[error("serialising the token")]
    TokenJson(#[source] serde_json::Error),
    /// A payload for [`format_image`] that is not whole 512-byte sectors.
    #[error("the payload {path} is {len} bytes, not a positive multiple of {IMAGE_SECTOR_SIZE}")]
    PayloadSize {
        /// The payload.
        path: PathBuf,
        /// Its length.
        len: u64,
    },
    /// The payload changed size while [`format_image`] read it.
    #[error("the payload {path} changed size while it was read")]
    PayloadChanged {
        /// The payload.
        path: PathBuf,
    },
    /// No free keyslot or token id.
    #[error("{device} has no free {what}")]
    Full {
        /// The device.
        device: String,
        /// "keyslot" or "token".
        what: &'static str,
    },
    /// Reading the payload or writing the image failed.
    #[error("{what} {path}")]
    Image {
        /// "reading" or "writing".
        what: String,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Removing this keyslot would leave the volume without any.
    #[error("refusing to remove keyslot {slot} of {device}: it is the last one")]
    LastKeyslot {
        /// The device.
        device: String,
        /// The slot.
        slot: u32,
    },
}

/// Where `cryptsetup` is looked for (Debian's cryptsetup-bin: /usr/sbin, /sbin on unmerged
/// systems).
pub const CRYPTSETUP_PATHS: [&str; 2] = ["/usr/sbin/cryptsetup", "/sbin/cryptsetup"];

/// LUKS2 allows 32 keyslots and 32 tokens (cryptsetup `LUKS2_KEYSLOTS_MAX`, `LUKS2_TOKENS_MAX`).
pub const MAX_SLOTS: u32 = 32;

/// cryptsetup's exit code for "no key available with this passphrase" (man cryptsetup,
/// RETURN CODES: 2 = permission denied / bad passphrase).
const EXIT_BAD_PASSPHRASE: i32 = 2;

/// PBKDF for keyslots that hold high-entropy TPM secrets: PBKDF2-SHA512, 1000 iterations, no
/// benchmark, as systemd's `cryptsetup_set_minimal_pbkdf`.
const MINIMAL_PBKDF: [&str; 6] = [
    "--pbkdf",
    "pbkdf2",
    "--pbkdf-force-iterations",
    "1000",
    "--hash",
    "sha512",
];

/// Why a LUKS2 JSON metadata area (as `cryptsetup luksDump --dump-json-metadata` prints it;
/// LUKS2 On-Disk Format Specification §3) is refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetadataError {
    /// Not JSON.
    #[error("not JSON")]
    Json(#[source] serde_json::Error),
    /// A required object is missing or not an object.
    #[error("no {0} object")]
    Missing(&'static str),
    /// A keyslot, token or segment key that is not a number below 32.
    #[error("{section} key {key:?} is not a number below 32")]
    BadKey {
        /// `keyslots`, `tokens` or `segments`.
        section: &'static str,
        /// The key.
        key: String,
    },
    /// The first data segment has no offset, or one that is not a decimal byte count.
    #[error("no data segment offset")]
    NoDataOffset,
    /// `luksDump --dump-volume-key` printed no 64-byte (AES-256-XTS) volume key.
    #[error("luksDump printed no 64-byte volume key")]
    NoVolumeKey,
}

/// The keyslots, tokens and data offset of a LUKS2 header.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct Metadata {
    /// Keyslot number → its JSON.
    pub keyslots: BTreeMap<u32, serde_json::Value>,
    /// Token id → its JSON.
    pub tokens: BTreeMap<u32, serde_json::Value>,
    /// Byte offset of data segment 0, if the header has one.
    pub data_offset: Option<u64>,
}

impl Metadata {
    /// Parse the JSON metadata area. Cost is linear in its size (serde_json's parser; cryptsetup
    /// itself limits the area to 4 MiB): this reads what the host wrote on the disk.
    pub fn parse(json: &[u8]) -> Result<Self, MetadataError> {
        let v: serde_json::Value = serde_json::from_slice(json).map_err(MetadataError::Json)?;
        let section =
            |name: &'static str| -> Result<BTreeMap<u32, serde_json::Value>, MetadataError> {
                let obj = v
                    .get(name)
                    .and_then(|o| o.as_object())
                    .ok_or(MetadataError::Missing(name))?;
                obj.iter()
                    .map(|(k, val)| match k.parse::<u32>() {
                        Ok(n) if n < MAX_SLOTS => Ok((n, val.clone())),
                        _ => Err(MetadataError::BadKey {
                            section: name,
                            key: k.clone(),
                        }),
                    })
                    .collect()
            };
        let data_offset = match v.get("segments").and_then(|s| s.get("0")) {
            None => None,
            Some(seg) => Some(
                seg.get("offset")
                    .and_then(|o| o.as_str())
                    .and_then(|o| o.parse().ok())
                    .ok_or(MetadataError::NoDataOffset)?,
            ),
        };
        Ok(Metadata {
            keyslots: section("keyslots")?,
            tokens: section("tokens")?,
            data_offset,
        })
    }

    /// The lowest unused keyslot.
    pub fn free_keyslot(&self) -> Option<u32> {
        (0..MAX_SLOTS).find(|n| !self.keyslots.contains_key(n))
    }
    /// The lowest unused token id.
    pub fn free_token(&self) -> Option<u32> {
        (0..MAX_SLOTS).find(|n| !self.tokens.contains_key(n))
    }
    /// Tokens of a type, with their ids.
    pub fn tokens_of_type<'a>(
        &'a self,
        kind: &'a str,
    ) -> impl Iterator<Item = (u32, &'a serde_json::Value)> + 'a {
        self.tokens
            .iter()
            .filter(move |(_, v)| v.get("type").and_then(|t| t.as_str()) == Some(kind))
            .map(|(k, v)| (*k, v))
    }
}

/// A LUKS2 device or image file.
#[derive(Clone, Debug)]
pub struct Luks {
    device: PathBuf,
    program: PathBuf,
}

impl Luks {
    /// A LUKS2 volume. `cryptsetup` is `$BOOTCHAIN_CRYPTSETUP`, else the first of
    /// [`CRYPTSETUP_PATHS`] that exists: an absolute path, never a `PATH` lookup, because this
    /// program receives passphrases.
    pub fn new(device: &Path) -> Self {
        let program = std::env::var_os("BOOTCHAIN_CRYPTSETUP")
            .map(PathBuf::from)
            .or_else(|| {
                CRYPTSETUP_PATHS
                    .iter()
                    .map(PathBuf::from)
                    .find(|p| p.exists())
            })
            .unwrap_or_else(|| PathBuf::from(CRYPTSETUP_PATHS[0]));
        Luks {
            device: device.to_path_buf(),
            program,
        }
    }

    /// The device path.
    pub fn device(&self) -> &Path {
        &self.device
    }

    fn dev(&self) -> String {
        self.device.display().to_string()
    }

    /// Run cryptsetup with `args`, `stdin` on its standard input; its stdout on success.
    fn run(&self, action: &'static str, args: &[&str], stdin: &[u8]) -> Result<Vec<u8>, LuksError> {
        self.run_with(action, args, &[], stdin)
    }

    /// Like [`Self::run`], with `trailing` positional arguments after the device.
    fn run_with(
        &self,
        action: &'static str,
        args: &[&str],
        trailing: &[&str],
        stdin: &[u8],
    ) -> Result<Vec<u8>, LuksError> {
        // "--": a device path starting with "-" is not an option. No PIN in its environment.
        let mut child = Command::new(&self.program)
            .args(args)
            .arg("--")
            .arg(&self.device)
            .args(trailing)
            .env_remove("BOOTCHAIN_PIN")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| LuksError::Spawn {
                program: self.program.display().to_string(),
                source,
            })?;
        if let Some(mut i) = child.stdin.take() {
            // cryptsetup may exit before reading (bad header): a broken pipe is not our error.
            let _ = i.write_all(stdin);
        }
        let out = child
            .wait_with_output()
            .map_err(|source| LuksError::Spawn {
                program: self.program.display().to_string(),
                source,
            })?;
        if out.status.success() {
            return Ok(out.stdout);
        }
        Err(LuksError::Failed {
            action,
            device: self.dev(),
            status: out.status.code().unwrap_or(-1),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }

    /// Read the header's keyslots and tokens, in process ([`header`]): what `luksDump
    /// --dump-json-metadata` prints, without a process.
    pub fn metadata(&self) -> Result<Metadata, LuksError> {
        let header_err = |source| LuksError::Header {
            device: self.dev(),
            source,
        };
        let mut f = std::fs::File::open(&self.device)
            .map_err(|e| header_err(header::HeaderError::Io(e)))?;
        let json = header::read_json(&mut f).map_err(header_err)?;
        Metadata::parse(&json).map_err(|source| LuksError::Metadata {
            device: self.dev(),
            source,
        })
    }

    /// Add a keyslot for `passphrase` (minimal PBKDF: it is a high-entropy secret), authorized
    /// by the key in `unlock_key_file`, in the first slot free in `md` (the header as read just
    /// before). Returns the new keyslot.
    pub fn add_keyslot(
        &self,
        md: &Metadata,
        unlock_key_file: &Path,
        passphrase: &[u8],
    ) -> Result<u32, LuksError> {
        let slot = md.free_keyslot().ok_or(LuksError::Full {
            device: self.dev(),
            what: "keyslot",
        })?;
        let slot_s = slot.to_string();
        let key_file = unlock_key_file.display().to_string();
        let mut args = vec![
            "luksAddKey",
            "--batch-mode",
            "--key-file",
            &key_file,
            "--new-keyfile",
            "-",
            "--new-key-slot",
            &slot_s,
        ];
        args.extend_from_slice(&MINIMAL_PBKDF);
        match self.run("luksAddKey", &args, passphrase) {
            Err(LuksError::Failed { status, .. }) if status == EXIT_BAD_PASSPHRASE => {
                Err(LuksError::WrongPassphrase {
                    what: format!("any keyslot (the key in {key_file})"),
                    device: self.dev(),
                })
            }
            Err(e) => Err(e),
            Ok(_) => Ok(slot),
        }
    }

    /// Store a token (its JSON names its keyslots) under the first id free in `md`. Returns
    /// the token id.
    pub fn import_token(&self, md: &Metadata, token: &serde_json::Value) -> Result<u32, LuksError> {
        let id = md.free_token().ok_or(LuksError::Full {
            device: self.dev(),
            what: "token",
        })?;
        let id_s = id.to_string();
        let json = serde_json::to_vec(token).map_err(LuksError::TokenJson)?;
        // --disable-external-tokens: cryptsetup would otherwise load the token type's plugin
        // (systemd's links libsystemd-shared) only to validate JSON bootchain just wrote.
        self.run(
            "token import",
            &[
                "token",
                "import",
                "--disable-external-tokens",
                "--json-file",
                "-",
                "--token-id",
                &id_s,
            ],
            &json,
        )?;
        Ok(id)
    }

    /// Remove a token.
    pub fn remove_token(&self, id: u32) -> Result<(), LuksError> {
        let id_s = id.to_string();
        self.run(
            "token remove",
            &["token", "remove", "--token-id", &id_s],
            b"",
        )?;
        Ok(())
    }

    /// Remove a keyslot (never the last one).
    pub fn kill_keyslot(&self, slot: u32) -> Result<(), LuksError> {
        let md = self.metadata()?;
        if md.keyslots.len() <= 1 && md.keyslots.contains_key(&slot) {
            return Err(LuksError::LastKeyslot {
                device: self.dev(),
                slot,
            });
        }
        let slot_s = slot.to_string();
        self.run_with(
            "luksKillSlot",
            &["luksKillSlot", "--batch-mode"],
            &[&slot_s],
            b"",
        )?;
        Ok(())
    }

    /// Check that `passphrase` opens `slot` (or any slot), without activating anything.
    pub fn test_passphrase(&self, slot: Option<u32>, passphrase: &[u8]) -> Result<(), LuksError> {
        let slot_s = slot.map(|s| s.to_string());
        let mut args = vec!["open", "--test-passphrase", "--key-file", "-"];
        if let Some(s) = &slot_s {
            args.extend_from_slice(&["--key-slot", s]);
        }
        match self.run("open --test-passphrase", &args, passphrase) {
            Err(LuksError::Failed { status, .. }) if status == EXIT_BAD_PASSPHRASE => {
                Err(LuksError::WrongPassphrase {
                    what: slot_s.map_or("any keyslot".into(), |s| format!("keyslot {s}")),
                    device: self.dev(),
                })
            }
            r => r.map(|_| ()),
        }
    }

    /// Activate the volume as `/dev/mapper/<name>` with `passphrase`.
    pub fn activate(
        &self,
        name: &str,
        slot: Option<u32>,
        passphrase: &[u8],
    ) -> Result<(), LuksError> {
        let slot_s = slot.map(|s| s.to_string());
        let mut args = vec!["open", "--type", "luks2", "--key-file", "-"];
        if let Some(s) = &slot_s {
            args.extend_from_slice(&["--key-slot", s]);
        }
        self.run_with("open", &args, &[name], passphrase)?;
        Ok(())
    }
}

/// The LUKS2 data sector size [`format_image`] uses. 512 bytes, so the dm-crypt IV
/// (`plain64`) is the 512-byte sector number from the segment start whatever the device's
/// block size (LUKS2 with 4096-byte sectors counts IVs in 4096-byte units).
pub const IMAGE_SECTOR_SIZE: usize = 512;

/// How [`format_image`] protects the first keyslot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyslotKdf {
    /// cryptsetup's default (Argon2id, benchmarked): for passphrases people type.
    #[default]
    Default,
    /// PBKDF2 with 1000 iterations (systemd's minimal PBKDF): only for high-entropy keys (a
    /// generated recovery key), and for guests too small or slow for Argon2id.
    Minimal,
}

/// Create the LUKS2 image `output` holding `plaintext` (a filesystem image) encrypted with
/// aes-xts-plain64 — without device-mapper or root: `cryptsetup luksFormat` writes the header
/// (keyslot 0 opened by `passphrase`), the volume key is read back with `luksDump
/// --dump-volume-key` (on stdout, never in a file), and the payload is encrypted here sector
/// by sector (IEEE 1619 XTS, tweak = little-endian sector number, dm-crypt `plain64`).
/// `output` appears only when complete (temporary file, fsync, rename).
pub fn format_image(
    plaintext: &Path,
    output: &Path,
    passphrase: &[u8],
    uuid: Option<&str>,
    kdf: KeyslotKdf,
) -> Result<(), LuksError> {
    use aes::cipher::KeyInit;
    use std::io::{Read, Seek, SeekFrom};
    use zeroize::Zeroizing;

    let io = |what: &str, path: &Path, source: std::io::Error| LuksError::Image {
        what: what.to_string(),
        path: path.to_path_buf(),
        source,
    };
    let mut input = std::fs::File::open(plaintext).map_err(|e| io("reading", plaintext, e))?;
    let len = input
        .metadata()
        .map_err(|e| io("reading", plaintext, e))?
        .len();
    if len == 0 || len % IMAGE_SECTOR_SIZE as u64 != 0 {
        return Err(LuksError::PayloadSize {
            path: plaintext.to_path_buf(),
            len,
        });
    }
    let mut out =
        crate::fsutil::AtomicFile::create(output, 0o600).map_err(|e| io("writing", output, e))?;
    // The LUKS2 header area is 16 MiB by default (cryptsetup luksFormat, --offset).
    const HEADER: u64 = 16 << 20;
    out.file()
        .set_len(HEADER + len)
        .map_err(|e| io("writing", output, e))?;
    let luks = Luks::new(out.temp_path());
    let mut args = vec![
        "luksFormat",
        "--batch-mode",
        "--type",
        "luks2",
        "--cipher",
        "aes-xts-plain64",
        "--key-size",
        "512",
        "--sector-size",
        "512",
        "--key-file",
        "-",
    ];
    if kdf == KeyslotKdf::Minimal {
        args.extend_from_slice(&MINIMAL_PBKDF);
    }
    if let Some(u) = uuid {
        args.extend_from_slice(&["--uuid", u]);
    }
    luks.run("luksFormat", &args, passphrase)?;
    let dump = Zeroizing::new(luks.run(
        "luksDump --dump-volume-key",
        &[
            "luksDump",
            "--dump-volume-key",
            "--batch-mode",
            "--key-file",
            "-",
        ],
        passphrase,
    )?);
    let no_key = || LuksError::Metadata {
        device: luks.dev(),
        source: MetadataError::NoVolumeKey,
    };
    let key = parse_volume_key_dump(&dump).ok_or_else(no_key)?;
    let offset = luks.data_offset()?;
    let xts = xts_mode::Xts128::new(
        aes::Aes256::new_from_slice(&key[..32]).map_err(|_| no_key())?,
        aes::Aes256::new_from_slice(&key[32..]).map_err(|_| no_key())?,
    );
    let file = out.file();
    file.seek(SeekFrom::Start(offset))
        .map_err(|e| io("writing", output, e))?;
    let mut buf = Zeroizing::new(vec![0u8; 1 << 20]);
    let mut sector: u128 = 0;
    loop {
        let mut n = 0;
        while n < buf.len() {
            match input.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io("reading", plaintext, e)),
            }
        }
        if n == 0 {
            break;
        }
        // The length was checked to be a sector multiple and reads fill the buffer; a file
        // that changes under us could still end mid-sector: refuse rather than misencrypt.
        if n % IMAGE_SECTOR_SIZE != 0 {
            return Err(LuksError::PayloadChanged {
                path: plaintext.to_path_buf(),
            });
        }
        xts.encrypt_area(
            &mut buf[..n],
            IMAGE_SECTOR_SIZE,
            sector,
            xts_mode::get_tweak_default,
        );
        file.write_all(&buf[..n])
            .map_err(|e| io("writing", output, e))?;
        sector += (n / IMAGE_SECTOR_SIZE) as u128;
    }
    out.commit().map_err(|e| io("writing", output, e))
}

/// The volume key from `cryptsetup luksDump --dump-volume-key` output ("MK dump:" and the hex
/// byte lines after it).
#[doc(hidden)]
pub fn parse_volume_key_dump(out: &[u8]) -> Option<zeroize::Zeroizing<Vec<u8>>> {
    let text = std::str::from_utf8(out).ok()?;
    let start = text.find("MK dump:")? + "MK dump:".len();
    let mut key = zeroize::Zeroizing::new(Vec::with_capacity(64));
    for word in text[start..].split_whitespace() {
        if word.len() != 2 {
            break;
        }
        key.push(u8::from_str_radix(word, 16).ok()?);
    }
    (key.len() == 64).then_some(key)
}

impl Luks {
    /// The byte offset of the first data segment.
    pub fn data_offset(&self) -> Result<u64, LuksError> {
        self.metadata()?
            .data_offset
            .ok_or_else(|| LuksError::Metadata {
                device: self.dev(),
                source: MetadataError::NoDataOffset,
            })
    }
}
