//! The `.hwids` section (systemd 257): devices bound to SMBIOS-derived hardware IDs (CHIDs),
//! from which systemd-stub picks the `.dtbauto` devicetree whose `compatible` matches.
//!
//! Format (systemd `src/boot/chid.h`, `struct Device`; ukify 257 `parse_hwid_dir`): an array
//! of 28-byte little-endian entries — descriptor (`type << 28 | 28`, type 1 = devicetree),
//! the CHID as an EFI_GUID (mixed-endian, ukify's `UUID.bytes_le`), then the offsets of the
//! device's name and compatible string — one entry per (device, CHID), ended by an all-zero
//! entry; then the string table: every distinct name and compatible once, sorted, each
//! NUL-terminated. Offsets count from the start of the blob. No padding anywhere.
//!
//! The input is ukify's `--hwids DIR`: every `*.json` file under DIR (recursively, symlinked
//! directories not followed, in sorted path order), each an object with `name`, `compatible`
//! and `hwids` (a list of GUID strings). Files naming the same (name, compatible) merge into
//! one device; devices keep the order of their first file; a device's CHIDs are deduplicated
//! and sorted by their RFC 4122 value, as Python sorts `uuid.UUID`s.
//!
//! Stricter than ukify, on purpose: DIR must exist (ukify's `rglob` of a missing directory
//! silently gives an empty table); GUIDs must be in the 8-4-4-4-12 form (ukify's `uuid.UUID`
//! also takes braces, `urn:uuid:` and no hyphens); strings must not contain NUL (the stub
//! reads them NUL-terminated); file names must be UTF-8; input is bounded ([`MAX_FILES`],
//! [`MAX_FILE_SIZE`], [`MAX_DEPTH`]).

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::efi::{EfiGuid, GuidError};

/// Size of one `struct Device` entry (`chid.h`).
pub const DEVICE_ENTRY_SIZE: usize = 4 + 16 + 4 + 4;
/// Device type of a devicetree entry (`chid.h` `DEVICE_TYPE_DEVICETREE`).
pub const DEVICE_TYPE_DEVICETREE: u32 = 1;
/// At most this many `*.json` files are read from a directory tree.
pub const MAX_FILES: usize = 4096;
/// A hwid description file may be at most this large.
pub const MAX_FILE_SIZE: u64 = 1 << 20;
/// Directories are followed at most this deep below the `--hwids` directory.
pub const MAX_DEPTH: usize = 32;

/// Errors reading hwid descriptions or building the `.hwids` blob.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HwidsError {
    /// A file or directory could not be read.
    #[error("cannot read {path}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The `--hwids` path is not a directory.
    #[error("{0}: not a directory")]
    NotADirectory(PathBuf),
    /// A `*.json` entry that is not a regular file (or a symlink to one).
    #[error("{0}: not a regular file")]
    NotAFile(PathBuf),
    /// More description files than [`MAX_FILES`].
    #[error("{dir}: more than {max} hwid description files")]
    TooManyFiles {
        /// The `--hwids` directory.
        dir: PathBuf,
        /// The limit.
        max: usize,
    },
    /// A description file larger than [`MAX_FILE_SIZE`].
    #[error("{path}: larger than {max} bytes")]
    FileTooLarge {
        /// The file.
        path: PathBuf,
        /// The limit.
        max: u64,
    },
    /// Directories nested deeper than [`MAX_DEPTH`].
    #[error("{path}: nested more than {max} directories deep")]
    TooDeep {
        /// The directory not entered.
        path: PathBuf,
        /// The limit.
        max: usize,
    },
    /// A file name that is not UTF-8 (its sort order would differ from ukify's).
    #[error("{0}: file name is not UTF-8")]
    NameNotUtf8(PathBuf),
    /// A file that is not UTF-8 text.
    #[error("{path}: not UTF-8")]
    NotUtf8 {
        /// The file.
        path: PathBuf,
        /// Where the UTF-8 breaks.
        #[source]
        source: std::string::FromUtf8Error,
    },
    /// A file that is not JSON.
    #[error("{path}: not JSON")]
    Json {
        /// The file.
        path: PathBuf,
        /// serde's error.
        #[source]
        source: serde_json::Error,
    },
    /// The JSON is not an object.
    #[error("{0}: not a JSON object")]
    NotAnObject(PathBuf),
    /// A required key is missing.
    #[error("{path}: hwid description does not contain {key:?}")]
    MissingKey {
        /// The file.
        path: PathBuf,
        /// The key.
        key: &'static str,
    },
    /// A key of the wrong JSON type (`name`, `compatible`: strings; `hwids`: a list of
    /// strings).
    #[error("{path}: {key:?} is not {expected}")]
    WrongType {
        /// The file.
        path: PathBuf,
        /// The key.
        key: &'static str,
        /// What it should be.
        expected: &'static str,
    },
    /// A string with a NUL byte, which would cut it short in the NUL-terminated table.
    #[error("{path}: {key:?} contains a NUL character")]
    Nul {
        /// The file.
        path: PathBuf,
        /// The key.
        key: &'static str,
    },
    /// A hardware ID that is not a GUID.
    #[error("{path}: hwids[{index}] is not a GUID")]
    Guid {
        /// The file.
        path: PathBuf,
        /// Its position in `hwids`.
        index: usize,
        /// The parse error.
        #[source]
        source: GuidError,
    },
    /// The blob would not fit the 32-bit string offsets.
    #[error("the .hwids table would be {len} bytes; its offsets are 32-bit")]
    TooLarge {
        /// The length it would have.
        len: u64,
    },
}

/// One hwid description file: a device and the CHIDs that identify it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HwidsEntry {
    /// Human-readable device name.
    pub name: String,
    /// The devicetree `compatible` string the stub matches against `.dtbauto` sections.
    pub compatible: String,
    /// The CHIDs (as `fwupdtool hwids` or `systemd-analyze chid` print them).
    pub hwids: Vec<EfiGuid>,
}

impl HwidsEntry {
    /// Parse one description (`path` names it in errors). Keys other than `name`,
    /// `compatible` and `hwids` are ignored, as ukify does.
    pub fn parse(path: &Path, bytes: Vec<u8>) -> Result<Self, HwidsError> {
        let p = || path.to_path_buf();
        let text =
            String::from_utf8(bytes).map_err(|source| HwidsError::NotUtf8 { path: p(), source })?;
        let v: Value =
            serde_json::from_str(&text).map_err(|source| HwidsError::Json { path: p(), source })?;
        let obj = v.as_object().ok_or_else(|| HwidsError::NotAnObject(p()))?;
        let get = |key: &'static str| {
            obj.get(key)
                .ok_or_else(|| HwidsError::MissingKey { path: p(), key })
        };
        let string = |key: &'static str| -> Result<String, HwidsError> {
            let s = get(key)?.as_str().ok_or_else(|| HwidsError::WrongType {
                path: p(),
                key,
                expected: "a string",
            })?;
            if s.contains('\0') {
                return Err(HwidsError::Nul { path: p(), key });
            }
            Ok(s.to_string())
        };
        let name = string("name")?;
        let compatible = string("compatible")?;
        let not_list = || HwidsError::WrongType {
            path: p(),
            key: "hwids",
            expected: "a list of GUID strings",
        };
        let hwids = get("hwids")?
            .as_array()
            .ok_or_else(not_list)?
            .iter()
            .enumerate()
            .map(|(index, g)| {
                g.as_str()
                    .ok_or_else(not_list)?
                    .parse::<EfiGuid>()
                    .map_err(|source| HwidsError::Guid {
                        path: p(),
                        index,
                        source,
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(HwidsEntry {
            name,
            compatible,
            hwids,
        })
    }
}

/// A device of the table: the descriptions naming the same (name, compatible), merged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceEntry {
    /// Device name.
    pub name: String,
    /// Devicetree `compatible` string.
    pub compatible: String,
    /// Its CHIDs, deduplicated, in RFC 4122 order.
    pub chids: Vec<EfiGuid>,
}

/// Merge descriptions into devices (ukify's `(name, compatible)` key): first-seen order,
/// CHIDs as a sorted set.
pub fn merge(entries: &[HwidsEntry]) -> Vec<DeviceEntry> {
    let mut out: Vec<(DeviceEntry, BTreeSet<[u8; 16]>)> = Vec::new();
    for e in entries {
        let i = match out
            .iter()
            .position(|(d, _)| d.name == e.name && d.compatible == e.compatible)
        {
            Some(i) => i,
            None => {
                out.push((
                    DeviceEntry {
                        name: e.name.clone(),
                        compatible: e.compatible.clone(),
                        chids: Vec::new(),
                    },
                    BTreeSet::new(),
                ));
                out.len() - 1
            }
        };
        if let Some((_, set)) = out.get_mut(i) {
            set.extend(e.hwids.iter().map(|g| g.rfc4122_bytes()));
        }
    }
    out.into_iter()
        .map(|(mut d, set)| {
            d.chids = set.into_iter().map(EfiGuid::from_rfc4122_bytes).collect();
            d
        })
        .collect()
}

/// Encode devices as a `.hwids` blob (format in the module documentation).
pub fn encode(devices: &[DeviceEntry]) -> Result<Vec<u8>, HwidsError> {
    let strings: BTreeSet<&str> = devices
        .iter()
        .flat_map(|d| [d.name.as_str(), d.compatible.as_str()])
        .collect();
    let entries = 1 + devices.iter().map(|d| d.chids.len()).sum::<usize>();
    let table_len = entries as u64 * DEVICE_ENTRY_SIZE as u64;
    let len = table_len + strings.iter().map(|s| s.len() as u64 + 1).sum::<u64>();
    let too_large = || HwidsError::TooLarge { len };
    if u32::try_from(len).is_err() {
        return Err(too_large());
    }
    let mut offsets = std::collections::BTreeMap::new();
    let mut string_blob = Vec::new();
    for s in &strings {
        let off = u32::try_from(table_len + string_blob.len() as u64).map_err(|_| too_large())?;
        offsets.insert(*s, off);
        string_blob.extend_from_slice(s.as_bytes());
        string_blob.push(0);
    }
    let descriptor = (DEVICE_TYPE_DEVICETREE << 28) | DEVICE_ENTRY_SIZE as u32;
    let mut out = Vec::with_capacity(len as usize);
    for d in devices {
        let name = offsets.get(d.name.as_str()).copied().unwrap_or_default();
        let compatible = offsets
            .get(d.compatible.as_str())
            .copied()
            .unwrap_or_default();
        for chid in &d.chids {
            out.extend_from_slice(&descriptor.to_le_bytes());
            out.extend_from_slice(&chid.0);
            out.extend_from_slice(&name.to_le_bytes());
            out.extend_from_slice(&compatible.to_le_bytes());
        }
    }
    out.extend_from_slice(&[0u8; DEVICE_ENTRY_SIZE]);
    out.extend_from_slice(&string_blob);
    Ok(out)
}

/// The `*.json` files under `dir`, in ukify's order (sorted by path components).
pub fn description_files(dir: &Path) -> Result<Vec<PathBuf>, HwidsError> {
    let meta = fs::metadata(dir).map_err(|source| HwidsError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(HwidsError::NotADirectory(dir.to_path_buf()));
    }
    let mut files = Vec::new();
    walk(dir, dir, 0, &mut files)?;
    files.sort();
    Ok(files)
}

fn walk(root: &Path, dir: &Path, depth: usize, files: &mut Vec<PathBuf>) -> Result<(), HwidsError> {
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| HwidsError::Io { path, source }
    };
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            return Err(HwidsError::NameNotUtf8(path));
        };
        // Not followed through symlinks, as Python's rglob does not.
        let ty = entry.file_type().map_err(io_err(&path))?;
        if name.ends_with(".json") {
            if files.len() >= MAX_FILES {
                return Err(HwidsError::TooManyFiles {
                    dir: root.to_path_buf(),
                    max: MAX_FILES,
                });
            }
            files.push(path.clone());
        }
        if ty.is_dir() {
            if depth >= MAX_DEPTH {
                return Err(HwidsError::TooDeep {
                    path,
                    max: MAX_DEPTH,
                });
            }
            walk(root, &path, depth + 1, files)?;
        }
    }
    Ok(())
}

/// Read one description file, bounded by [`MAX_FILE_SIZE`].
pub fn read_description(path: &Path) -> Result<HwidsEntry, HwidsError> {
    let io_err = |source| HwidsError::Io {
        path: path.to_path_buf(),
        source,
    };
    let f = File::open(path).map_err(io_err)?;
    if !f.metadata().map_err(io_err)?.is_file() {
        return Err(HwidsError::NotAFile(path.to_path_buf()));
    }
    let mut bytes = Vec::new();
    f.take(MAX_FILE_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(io_err)?;
    if bytes.len() as u64 > MAX_FILE_SIZE {
        return Err(HwidsError::FileTooLarge {
            path: path.to_path_buf(),
            max: MAX_FILE_SIZE,
        });
    }
    HwidsEntry::parse(path, bytes)
}

/// The `.hwids` blob ukify 257 builds for `--hwids DIR`.
pub fn blob_from_dir(dir: &Path) -> Result<Vec<u8>, HwidsError> {
    let entries = description_files(dir)?
        .iter()
        .map(|p| read_description(p))
        .collect::<Result<Vec<_>, _>>()?;
    encode(&merge(&entries))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guid(s: &str) -> EfiGuid {
        s.parse().unwrap()
    }

    fn parse(json: &str) -> Result<HwidsEntry, HwidsError> {
        HwidsEntry::parse(Path::new("t.json"), json.as_bytes().to_vec())
    }

    #[test]
    fn encodes_entries_strings_and_terminator() {
        let devices = merge(&[
            HwidsEntry {
                name: "Board B".into(),
                compatible: "vendor,b".into(),
                hwids: vec![
                    guid("20000000-0000-0000-0000-000000000000"),
                    // Sorts first by value although its first stored byte is larger.
                    guid("100000ff-0000-0000-0000-000000000000"),
                ],
            },
            HwidsEntry {
                name: "Board A".into(),
                compatible: "vendor,b".into(),
                hwids: vec![guid("30000000-0000-0000-0000-000000000000")],
            },
        ]);
        let blob = encode(&devices).unwrap();
        // 3 entries + terminator, then "Board A\0Board B\0vendor,b\0".
        assert_eq!(blob.len(), 4 * 28 + 8 + 8 + 9);
        assert_eq!(&blob[0..4], &0x1000_001cu32.to_le_bytes());
        assert_eq!(&blob[4..8], &[0xff, 0, 0, 0x10]);
        let name_off =
            |e: usize| u32::from_le_bytes(blob[e * 28 + 20..e * 28 + 24].try_into().unwrap());
        assert_eq!(name_off(0), 112 + 8, "Board B after Board A");
        assert_eq!(name_off(2), 112);
        assert_eq!(&blob[4 + 28..8 + 28], &[0, 0, 0, 0x20]);
        assert!(blob[84..112].iter().all(|&b| b == 0));
        assert_eq!(&blob[112..], b"Board A\0Board B\0vendor,b\0");
    }

    #[test]
    fn merges_same_device_and_dedups() {
        let e = |g: &str| HwidsEntry {
            name: "n".into(),
            compatible: "c".into(),
            hwids: vec![guid(g)],
        };
        let d = merge(&[
            e("00000000-0000-0000-0000-000000000002"),
            e("00000000-0000-0000-0000-000000000001"),
            e("00000000-0000-0000-0000-000000000002"),
        ]);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].chids.len(), 2);
        assert_eq!(d[0].chids[0], guid("00000000-0000-0000-0000-000000000001"));
    }

    #[test]
    fn empty_table_is_one_terminator() {
        assert_eq!(encode(&[]).unwrap(), vec![0u8; 28]);
    }

    #[test]
    fn bad_inputs_give_typed_errors() {
        let ok =
            r#"{"name":"n","compatible":"c","hwids":["2e4d7e5c-1d4c-5fb6-9b2a-6a6d0c7b1c44"]}"#;
        assert_eq!(parse(ok).unwrap().hwids.len(), 1);
        assert!(matches!(
            parse(r#"{"name":"n","compatible":"c","hwids":["not-a-guid"]}"#),
            Err(HwidsError::Guid { index: 0, .. })
        ));
        assert!(matches!(
            parse(
                r#"{"name":"n","compatible":"c","hwids":["+e4d7e5c-1d4c-5fb6-9b2a-6a6d0c7b1c44"]}"#
            ),
            Err(HwidsError::Guid { .. })
        ));
        assert!(matches!(
            parse(r#"{"name":"n","hwids":[]}"#),
            Err(HwidsError::MissingKey {
                key: "compatible",
                ..
            })
        ));
        assert!(matches!(parse("name = n"), Err(HwidsError::Json { .. })));
        assert!(matches!(parse("[1]"), Err(HwidsError::NotAnObject(_))));
        assert!(matches!(
            parse(r#"{"name":1,"compatible":"c","hwids":[]}"#),
            Err(HwidsError::WrongType { key: "name", .. })
        ));
        assert!(matches!(
            parse(
                r#"{"name":"n","compatible":"c","hwids":"2e4d7e5c-1d4c-5fb6-9b2a-6a6d0c7b1c44"}"#
            ),
            Err(HwidsError::WrongType { key: "hwids", .. })
        ));
        assert!(matches!(
            parse(r#"{"name":"n\u0000x","compatible":"c","hwids":[]}"#),
            Err(HwidsError::Nul { key: "name", .. })
        ));
        assert!(matches!(
            HwidsEntry::parse(Path::new("t.json"), vec![b'{', 0xff, b'}']),
            Err(HwidsError::NotUtf8 { .. })
        ));
    }

    #[test]
    fn directory_walk_is_sorted_bounded_and_checked() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        std::fs::create_dir(p.join("a")).unwrap();
        let one =
            r#"{"name":"n","compatible":"c","hwids":["00000000-0000-0000-0000-000000000001"]}"#;
        std::fs::write(p.join("a/x.json"), one).unwrap();
        std::fs::write(p.join("a-b.json"), one).unwrap();
        std::fs::write(p.join("readme.txt"), "ignored").unwrap();
        let files = description_files(p).unwrap();
        // By components as Python sorts paths: "a" < "a-b.json", though '/' > '-'.
        assert_eq!(files, vec![p.join("a/x.json"), p.join("a-b.json")]);
        assert_eq!(blob_from_dir(p).unwrap().len(), 2 * 28 + 4);

        std::fs::write(p.join("big.json"), vec![b' '; MAX_FILE_SIZE as usize + 1]).unwrap();
        assert!(matches!(
            blob_from_dir(p),
            Err(HwidsError::FileTooLarge { .. })
        ));
        std::fs::remove_file(p.join("big.json")).unwrap();
        std::fs::write(p.join("bad.json"), "{").unwrap();
        assert!(matches!(blob_from_dir(p), Err(HwidsError::Json { .. })));
        assert!(matches!(
            blob_from_dir(&p.join("readme.txt")),
            Err(HwidsError::NotADirectory(_))
        ));
        assert!(matches!(
            blob_from_dir(&p.join("missing")),
            Err(HwidsError::Io { .. })
        ));
    }
}
