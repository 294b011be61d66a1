//! Atomic output files: write to a temporary file in the destination directory, fsync, then
//! rename over the destination. A failure at any point leaves no partial output behind. And
//! bounded reads of small inputs that an attacker may have planted.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// An output file that appears at its destination only when [`AtomicFile::commit`] succeeds.
/// Dropping it uncommitted removes the temporary file.
#[derive(Debug)]
pub struct AtomicFile {
    tmp: tempfile::NamedTempFile,
    dest: PathBuf,
    mode: u32,
    no_clobber: bool,
}

impl AtomicFile {
    /// Start writing `dest`; the final file gets permission bits `mode` (e.g. 0o644, or 0o600
    /// for secrets). The temporary file is created 0600, so secrets are never world-readable.
    pub fn create(dest: &Path, mode: u32) -> io::Result<Self> {
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "out".into());
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".tmp")
            .tempfile_in(&dir)?;
        Ok(AtomicFile {
            tmp,
            dest: dest.to_path_buf(),
            mode,
            no_clobber: false,
        })
    }

    /// Like [`AtomicFile::create`], but [`AtomicFile::commit`] never replaces an existing
    /// `dest`: it fails with [`io::ErrorKind::AlreadyExists`] if something appeared there
    /// (the rename is `RENAME_NOREPLACE`, or a hard link, so there is no window).
    pub fn create_new(dest: &Path, mode: u32) -> io::Result<Self> {
        let mut f = Self::create(dest, mode)?;
        f.no_clobber = true;
        Ok(f)
    }

    /// The open temporary file.
    pub fn file(&mut self) -> &mut File {
        self.tmp.as_file_mut()
    }

    /// The temporary file's path (for a tool that must write it by name, such as cryptsetup).
    pub fn temp_path(&self) -> &Path {
        self.tmp.path()
    }

    /// The destination path.
    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// Set the mode on the open file, fsync it, rename it into place, and fsync the directory
    /// (a bare file name syncs the current directory); any error is returned.
    pub fn commit(self) -> io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        // On the descriptor, not by path: nobody can swap the path between the two.
        self.tmp
            .as_file()
            .set_permissions(std::fs::Permissions::from_mode(self.mode))?;
        self.tmp.as_file().sync_all()?;
        let dest = self.dest.clone();
        if self.no_clobber {
            self.tmp.persist_noclobber(&dest).map_err(|e| e.error)?;
        } else {
            self.tmp.persist(&dest).map_err(|e| e.error)?;
        }
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        File::open(&dir)?.sync_all()
    }
}

/// Write `data` atomically to `dest` with permission bits `mode`.
pub fn write_atomic(dest: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    use std::io::Write;
    let mut f = AtomicFile::create(dest, mode)?;
    f.file().write_all(data)?;
    f.commit()
}

/// Commit several output files so that all of them appear or none does: each is complete
/// (written, fsynced) before the first is renamed into place, and if a later rename fails
/// the ones already in place are removed again. For outputs that are useless apart — an
/// envelope and the random secret sealed in it. Returns the failing file's path and error.
pub fn commit_all(files: Vec<AtomicFile>) -> Result<(), (PathBuf, io::Error)> {
    let mut done: Vec<PathBuf> = Vec::new();
    for f in files {
        let dest = f.dest().to_path_buf();
        if let Err(e) = f.commit() {
            for d in &done {
                let _ = std::fs::remove_file(d);
            }
            return Err((dest, e));
        }
        done.push(dest);
    }
    Ok(())
}

/// The largest JSON input (envelope, `.pcrsig`, token) read whole: 1 MiB, a hundred times
/// any real one; LUKS2 keeps its whole JSON area under 4 MiB (cryptsetup `LUKS2_HDR_16K_LEN`
/// .. 4 MiB), and tokens are a fraction of it.
pub const MAX_JSON_INPUT: u64 = 1 << 20;

/// Read `path` whole if it holds at most `limit` bytes; a longer file (or one that grows while
/// read) is an [`io::ErrorKind::FileTooLarge`] error, after reading at most `limit + 1` bytes,
/// so a planted sparse file of terabytes costs nothing.
pub fn read_bounded(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    let f = File::open(path)?;
    let hint = f.metadata().map(|m| m.len()).unwrap_or(0).min(limit);
    let mut data = Vec::with_capacity(usize::try_from(hint).unwrap_or(0));
    f.take(limit.saturating_add(1)).read_to_end(&mut data)?;
    if data.len() as u64 > limit {
        return Err(io::Error::new(
            io::ErrorKind::FileTooLarge,
            format!("larger than {limit} bytes"),
        ));
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn create_new_never_replaces() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("key.pem");
        std::fs::write(&p, b"old").unwrap();
        let mut f = AtomicFile::create_new(&p, 0o600).unwrap();
        use std::io::Write;
        f.file().write_all(b"new").unwrap();
        let e = f.commit().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn uncommitted_leaves_nothing() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("out.bin");
        {
            let mut f = AtomicFile::create(&p, 0o644).unwrap();
            use std::io::Write;
            f.file().write_all(b"partial").unwrap();
        }
        assert!(!p.exists());
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
    }

    #[test]
    fn commit_sets_mode() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("secret");
        write_atomic(&p, b"x", 0o600).unwrap();
        let m = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(m, 0o600);
    }

    #[test]
    fn bounded_read_refuses_a_sparse_terabyte_and_takes_the_limit() {
        let d = tempfile::tempdir().unwrap();
        let big = d.path().join("big");
        File::create(&big).unwrap().set_len(1 << 40).unwrap();
        let e = read_bounded(&big, MAX_JSON_INPUT).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::FileTooLarge);
        let exact = d.path().join("exact");
        std::fs::write(&exact, [7u8; 100]).unwrap();
        assert_eq!(read_bounded(&exact, 100).unwrap(), [7u8; 100]);
        assert_eq!(
            read_bounded(&exact, 99).unwrap_err().kind(),
            io::ErrorKind::FileTooLarge
        );
    }
}
