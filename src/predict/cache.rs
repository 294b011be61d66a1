//! Digests of input files kept across predictions, so that predicting many images that share
//! inputs (one kernel, many command lines and initrds) hashes each shared file once: the cost
//! grows with the new bytes, not with the number of images.
//!
//! Entries are keyed by the file's identity as `stat(2)` reports it (device, inode, size,
//! modification and change times), as make and ccache's direct mode do: any write to a file
//! changes its ctime, so a rewritten file is hashed again. A file that changes while it is
//! being hashed is hashed but not cached.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::firmware::BootImage;
use crate::hash::{Digest, HashAlg, MultiHasher};
use crate::measure::Phase;
use crate::measure::{predict_pcr11, MeasureError, Pcr11Prediction, SectionDigests};
use crate::ukiread::UkiSection;

/// A file changed less than this long ago is hashed but not cached (see `FileKey::settled`):
/// on file systems with nanosecond timestamps, which still tick only every few milliseconds.
const RACY_NS: i128 = 100_000_000;
/// The same on file systems with whole-second timestamps (vfat, the ESP: 2 s mtime).
const RACY_NS_COARSE: i128 = 2_000_000_000;

/// Open `path`, which must be a regular file (a FIFO or `/dev/zero` would be read forever),
/// with its key.
fn open_regular(path: &Path) -> Result<(File, FileKey), MeasureError> {
    let err = |source| MeasureError::Input {
        path: path.to_path_buf(),
        source,
    };
    let f = File::open(path).map_err(err)?;
    let m = f.metadata().map_err(err)?;
    if !m.is_file() {
        return Err(err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        )));
    }
    Ok((f, FileKey::of(&m)))
}

/// A file's identity and version, from `stat(2)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct FileKey {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileKey {
    /// Whether the file was last changed long enough ago that a further write would show in
    /// its timestamps (git's "racy" rule): a write within the same timestamp tick, at the same
    /// size, leaves the key as it was.
    fn settled(&self) -> bool {
        let ns = |(s, n): (i64, i64)| i128::from(s) * 1_000_000_000 + i128::from(n);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i128)
            .unwrap_or(0);
        let coarse = self.mtime.1 == 0 && self.ctime.1 == 0;
        let window = if coarse { RACY_NS_COARSE } else { RACY_NS };
        now - ns(self.mtime).max(ns(self.ctime)) > window
    }

    fn of(m: &std::fs::Metadata) -> Self {
        FileKey {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }
}

/// What is known about one file version.
#[derive(Default)]
struct Entry {
    /// Digests of the whole content, per bank.
    content: BTreeMap<HashAlg, Digest>,
    /// Authenticode digests (the file is a PE image), per bank.
    authenticode: BTreeMap<HashAlg, Digest>,
}

/// A cache of file digests shared by predictions (thread-safe: predictions may run in
/// parallel over one cache).
///
/// ```no_run
/// use bootchain::cache::DigestCache;
/// use bootchain::hash::HashAlg;
/// use bootchain::ukiread::UkiSection;
/// use std::path::Path;
///
/// let cache = DigestCache::new();
/// let phases = bootchain::measure::phase_list(&["enter-initrd"])?;
/// for initrd in ["initrd-a", "initrd-b"] {
///     let parts = [
///         (UkiSection::Linux, Path::new("vmlinuz")),
///         (UkiSection::Initrd, Path::new(initrd)),
///     ];
///     // vmlinuz is read once, by the first prediction.
///     let pcr11 = cache.predict_parts(&parts, &[HashAlg::Sha256], &phases)?;
///     println!("{initrd}: PCR 11 = {}", pcr11.phases[0].values[0]);
/// }
/// # Ok::<(), bootchain::measure::MeasureError>(())
/// ```
#[derive(Default)]
pub struct DigestCache {
    entries: Mutex<HashMap<FileKey, Entry>>,
    hashed: AtomicU64,
}

impl std::fmt::Debug for DigestCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DigestCache")
            .field("hashed_bytes", &self.hashed_bytes())
            .finish_non_exhaustive()
    }
}

impl DigestCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes read and hashed through this cache so far: what the predictions cost.
    pub fn hashed_bytes(&self) -> u64 {
        self.hashed.load(Ordering::Relaxed)
    }

    fn lookup<T>(&self, key: &FileKey, f: impl FnOnce(&Entry) -> Option<T>) -> Option<T> {
        // A poisoned lock only means another prediction panicked; the map is still whole.
        let map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        map.get(key).and_then(f)
    }

    fn store(&self, file: &File, key: FileKey, f: impl FnOnce(&mut Entry)) {
        // Cache only if the file did not change while it was read, and is not "racy".
        if key.settled() && file.metadata().map(|m| FileKey::of(&m)).ok() == Some(key) {
            let mut map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            f(map.entry(key).or_default());
        }
    }

    /// The size and content digests of `path` in `banks` (in that order), from the cache when
    /// this version of the file is known in all of them, else hashing it in `banks`.
    pub fn file_digests(
        &self,
        path: &Path,
        banks: &[HashAlg],
    ) -> Result<(u64, Vec<Digest>), MeasureError> {
        let err = |source| MeasureError::Input {
            path: path.to_path_buf(),
            source,
        };
        let (mut f, key) = open_regular(path)?;
        let pick = |e: &Entry| {
            banks
                .iter()
                .map(|b| e.content.get(b).cloned())
                .collect::<Option<Vec<_>>>()
        };
        if let Some(d) = self.lookup(&key, pick) {
            return Ok((key.len, d));
        }
        let mut mh = MultiHasher::new(banks);
        let n = std::io::copy(&mut f, &mut mh).map_err(err)?;
        self.hashed.fetch_add(n, Ordering::Relaxed);
        let digests = mh.finalize();
        if n == key.len {
            self.store(&f, key, |e| {
                e.content
                    .extend(digests.iter().map(|d| (d.alg(), d.clone())));
            });
        }
        Ok((n, digests))
    }

    /// The Authenticode digests of the PE image at `path` in `banks`.
    pub fn authenticode(
        &self,
        path: &Path,
        banks: &[HashAlg],
    ) -> Result<Vec<Digest>, MeasureError> {
        let (mut f, key) = open_regular(path)?;
        let pick = |e: &Entry| {
            banks
                .iter()
                .map(|b| e.authenticode.get(b).cloned())
                .collect::<Option<Vec<_>>>()
        };
        if let Some(d) = self.lookup(&key, pick) {
            return Ok(d);
        }
        let digests = crate::authenticode::image_digests(&mut f, banks).map_err(|source| {
            MeasureError::Image {
                path: path.to_path_buf(),
                source,
            }
        })?;
        self.hashed.fetch_add(key.len, Ordering::Relaxed);
        self.store(&f, key, |e| {
            e.authenticode
                .extend(digests.iter().map(|d| (d.alg(), d.clone())));
        });
        Ok(digests)
    }

    /// [`crate::measure::predict_parts`] with this cache: PCR 11 for a UKI made of these
    /// section files, as systemd-measure predicts it.
    pub fn predict_parts(
        &self,
        parts: &[(UkiSection, &Path)],
        banks: &[HashAlg],
        phases: &[Phase],
    ) -> Result<Pcr11Prediction, MeasureError> {
        let mut sections = Vec::with_capacity(parts.len());
        for (section, path) in parts {
            let (size, digests) = self.file_digests(path, banks)?;
            sections.push(SectionDigests {
                section: *section,
                size,
                digests,
            });
        }
        Ok(predict_pcr11(&sections, None, banks, phases))
    }

    /// The PCR 4 event of a kernel image the stub loads (see
    /// [`crate::firmware::predict_pcr4`]), from the cache.
    pub fn boot_image(
        &self,
        description: impl Into<String>,
        path: &Path,
        banks: &[HashAlg],
    ) -> Result<BootImage, MeasureError> {
        Ok(BootImage {
            description: description.into(),
            authenticode: self
                .authenticode(path, banks)?
                .into_iter()
                .map(|d| (d.alg(), d))
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_files_are_hashed_once_and_rewrites_again() {
        let dir = tempfile::tempdir().unwrap();
        let kernel = dir.path().join("k");
        std::fs::write(&kernel, vec![7u8; 100_000]).unwrap();
        let cache = DigestCache::new();
        // Just written: hashed, not cached (a same-size rewrite in the same timestamp tick
        // would not change its key).
        cache.file_digests(&kernel, &[HashAlg::Sha256]).unwrap();
        cache.file_digests(&kernel, &[HashAlg::Sha256]).unwrap();
        assert_eq!(cache.hashed_bytes(), 2 * 100_000);
        std::thread::sleep(std::time::Duration::from_millis(150));
        let cache = DigestCache::new();
        let banks = [HashAlg::Sha256, HashAlg::Sha384];
        let mut first = None;
        for i in 0..5u8 {
            let initrd = dir.path().join(format!("i{i}"));
            std::fs::write(&initrd, [i; 10]).unwrap();
            // (Each initrd is used once: that it is too new to cache costs nothing.)
            let phases = crate::measure::phase_list(&["enter-initrd"]).unwrap();
            let parts = [
                (UkiSection::Linux, kernel.as_path()),
                (UkiSection::Initrd, initrd.as_path()),
            ];
            let cached = cache.predict_parts(&parts, &banks, &phases).unwrap();
            let plain = crate::measure::predict_parts(&parts, &banks, &phases).unwrap();
            assert_eq!(cached.phases[0].values, plain.phases[0].values);
            first.get_or_insert(cached.phases[0].values.clone());
        }
        assert_eq!(cache.hashed_bytes(), 100_000 + 5 * 10);
        // Only the missing bank is hashed for a known file.
        let (_, d) = cache.file_digests(&kernel, &[HashAlg::Sha1]).unwrap();
        assert_eq!(d[0], HashAlg::Sha1.digest(&[7u8; 100_000]));
        assert_eq!(cache.hashed_bytes(), 2 * 100_000 + 5 * 10);
        // A rewrite (same size) is a new version.
        std::thread::sleep(std::time::Duration::from_millis(10));
        std::fs::write(&kernel, vec![8u8; 100_000]).unwrap();
        let (_, d) = cache.file_digests(&kernel, &[HashAlg::Sha256]).unwrap();
        assert_eq!(d[0], HashAlg::Sha256.digest(&[8u8; 100_000]));
        assert_eq!(cache.hashed_bytes(), 3 * 100_000 + 5 * 10);
    }
}
