//! The output stream: every byte written once and hashed as it is written (Authenticode
//! SHA-256, and the section digests PCR 11 needs when asked), with early writeback so the
//! final fsync has little left to do.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;

use super::{input_err, SectionContent, UkiError};
use crate::hash::MultiHasher;
use crate::pe;

/// Copy buffer size: bounds peak memory whatever the input sizes.
pub(super) const COPY_BUF: usize = 4 << 20;

/// A writer that hashes what it writes, except for the byte ranges in `skip`.
///
/// Large writes hash on helper threads while the first writes, so on two cores a build
/// costs about max(hash, write) rather than their sum.
pub(super) struct HashingWriter<'a> {
    pub(super) inner: &'a mut File,
    /// The output's path, for errors.
    pub(super) path: &'a Path,
    pub(super) hasher: MultiHasher,
    pub(super) pos: u64,
    pub(super) syncer: EarlyWriteback,
    pub(super) skip: Vec<(u64, u64)>,
    /// Hashes the bytes of the section being written (its PCR 11 digests), when set.
    pub(super) section: Option<MultiHasher>,
}

/// Starts writeback of a large output while it is still being written (fdatasync on a
/// helper thread every [`EarlyWriteback::EVERY`] bytes), so the final fsync before the rename
/// has little left to do.
pub(super) struct EarlyWriteback {
    tx: Option<std::sync::mpsc::SyncSender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    last: u64,
}

impl EarlyWriteback {
    const EVERY: u64 = 32 << 20;

    pub(super) fn start(f: &File) -> io::Result<Self> {
        let f = f.try_clone()?;
        let (tx, rx) = std::sync::mpsc::sync_channel::<()>(1);
        let thread = std::thread::spawn(move || {
            while rx.recv().is_ok() {
                // Best effort: the final sync_all before the rename is what guarantees
                // durability, and reports errors.
                let _ = f.sync_data();
            }
        });
        Ok(EarlyWriteback {
            tx: Some(tx),
            thread: Some(thread),
            last: 0,
        })
    }

    fn progress(&mut self, pos: u64) {
        if pos - self.last >= Self::EVERY {
            if let Some(tx) = &self.tx {
                // A full channel means a sync is still running: skip this one.
                let _ = tx.try_send(());
            }
            self.last = pos;
        }
    }
}

impl Drop for EarlyWriteback {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Hash `data`, which sits at file offset `start`, leaving out the `skip` ranges.
fn hash_skipping(hasher: &mut MultiHasher, skip: &[(u64, u64)], start: u64, data: &[u8]) {
    let end = start + data.len() as u64;
    let mut cur = start;
    let mut skips: Vec<_> = skip
        .iter()
        .filter(|(o, l)| *o < end && o + l > start)
        .copied()
        .collect();
    skips.sort();
    for (o, l) in skips {
        let s = o.max(start);
        if s > cur {
            hasher.update(&data[(cur - start) as usize..(s - start) as usize]);
        }
        cur = cur.max((o + l).min(end));
    }
    if cur < end {
        hasher.update(&data[(cur - start) as usize..]);
    }
}

/// How much one `copy_file_range` call copies before early writeback is offered more.
const COPY_PIECE: usize = 16 << 20;

/// Writes at least this large are hashed on a helper thread.
const PARALLEL_MIN: usize = 256 * 1024;

impl HashingWriter<'_> {
    pub(super) fn pad_to(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), UkiError> {
        while self.pos < offset {
            let n = (offset - self.pos).min(buf.len() as u64) as usize;
            buf[..n].fill(0);
            self.put(&buf[..n])?;
        }
        Ok(())
    }

    /// Write all of `data`; an error names the output.
    pub(super) fn put(&mut self, data: &[u8]) -> Result<(), UkiError> {
        self.write_all(data).map_err(|source| UkiError::Output {
            path: self.path.to_path_buf(),
            source,
        })
    }
}

impl Write for HashingWriter<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let start = self.pos;
        let HashingWriter {
            inner,
            hasher,
            skip,
            section,
            ..
        } = self;
        if data.len() >= PARALLEL_MIN {
            std::thread::scope(|s| {
                let t = s.spawn(|| hash_skipping(hasher, skip, start, data));
                let t2 = section.as_mut().map(|h| s.spawn(move || h.update(data)));
                let r = inner.write_all(data);
                let panicked = || io::Error::other("hashing thread panicked");
                t.join().map_err(|_| panicked())?;
                if let Some(t2) = t2 {
                    t2.join().map_err(|_| panicked())?;
                }
                r
            })?;
        } else {
            inner.write_all(data)?;
            hash_skipping(hasher, skip, start, data);
            if let Some(h) = section {
                h.update(data);
            }
        }
        self.pos += data.len() as u64;
        self.syncer.progress(self.pos);
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Below this size a file is copied through the buffer: a thread and a kernel copy cost more
/// than they save.
const KERNEL_COPY_MIN: u64 = 1 << 20;

/// The file's identity and change times, compared before and after a kernel-side copy: the
/// copy and the hashing read the file separately, so a file rewritten in between would give
/// an image whose signature does not match its bytes.
fn fingerprint(m: &std::fs::Metadata) -> (u64, u64, i64, i64, i64, i64) {
    use std::os::unix::fs::MetadataExt;
    (
        m.ino(),
        m.len(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
    )
}

fn copy_file(path: &Path, w: &mut HashingWriter<'_>, buf: &mut [u8]) -> Result<u64, UkiError> {
    let f = File::open(path).map_err(input_err(path))?;
    let before = f.metadata().map_err(input_err(path))?;
    if before.len() >= KERNEL_COPY_MIN && before.is_file() {
        if let Some(n) = w.copy_range(path, &f, 0, before.len())? {
            let after = f.metadata().map_err(input_err(path))?;
            if fingerprint(&after) != fingerprint(&before) {
                return Err(input_err(path)(io::Error::other(
                    "the file changed while it was copied",
                )));
            }
            return Ok(n);
        }
    }
    copy_reader(path, f, w, buf)
}

impl HashingWriter<'_> {
    /// Copies `len` bytes of `src` from `offset` to the output with `copy_file_range(2)` (no
    /// user-space round trip), while helper threads read what was written back from the
    /// output (page cache) and hash it. `None` when the kernel cannot copy between these files (other file
    /// system type, old kernel) and nothing was written: the caller copies through a buffer.
    fn copy_range(
        &mut self,
        path: &Path,
        src: &File,
        offset: u64,
        len: u64,
    ) -> Result<Option<u64>, UkiError> {
        use std::os::unix::fs::FileExt;
        let start = self.pos;
        let HashingWriter {
            inner,
            hasher,
            skip,
            section,
            syncer,
            ..
        } = self;
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        // The hashers read back what the kernel wrote to the output (never the input again):
        // the signature and the section digests are of the output's bytes, whatever happens to
        // the input meanwhile. `copied_so_far` is how much of the range is in the output,
        // `stopped` says the copy will not go further.
        let out: &File = inner;
        let copied_so_far = AtomicU64::new(0);
        let stopped = AtomicBool::new(false);
        // Reads the range back from the output as it is copied and feeds it to `f`; the count
        // read.
        let read_into = |f: &mut dyn FnMut(u64, &[u8])| -> io::Result<u64> {
            let mut buf = vec![0u8; COPY_BUF];
            let mut done = 0u64;
            while done < len {
                let stop = stopped.load(Ordering::Acquire);
                let avail = copied_so_far.load(Ordering::Acquire);
                if avail <= done {
                    if stop {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_micros(200));
                    continue;
                }
                let want = (avail - done).min(buf.len() as u64) as usize;
                let n = out.read_at(&mut buf[..want], start + done)?;
                if n == 0 {
                    break;
                }
                f(done, &buf[..n]);
                done += n as u64;
            }
            Ok(done)
        };
        let out_err = |source: io::Error| UkiError::Output {
            path: self.path.to_path_buf(),
            source,
        };
        // The first chunk alone, before any hashing: if the kernel cannot copy between these
        // files, nothing has been written or hashed yet.
        let mut off_in = offset;
        let first = len.min(COPY_BUF as u64) as usize;
        let mut copied = loop {
            match rustix::fs::copy_file_range(src, Some(&mut off_in), out, None, first) {
                // Nothing copied of a non-empty range: copy through the buffer instead.
                Ok(0) if len > 0 => return Ok(None),
                Ok(n) => break n as u64,
                Err(rustix::io::Errno::INTR) => {}
                Err(
                    rustix::io::Errno::XDEV
                    | rustix::io::Errno::INVAL
                    | rustix::io::Errno::NOSYS
                    | rustix::io::Errno::OPNOTSUPP,
                ) => return Ok(None),
                Err(e) => return Err(out_err(e.into())),
            }
        };
        copied_so_far.store(copied, Ordering::Release);
        let joined = std::thread::scope(|s| {
            let t = s
                .spawn(|| read_into(&mut |at, data| hash_skipping(hasher, skip, start + at, data)));
            let t2 = section
                .as_mut()
                .map(|h| s.spawn(|| read_into(&mut |_, data| h.update(data))));
            let mut result = Ok(());
            while copied < len && copied > 0 {
                // In pieces, so that early writeback starts while a large input is still
                // being copied: the disk works alongside the hashing instead of after it.
                let want = usize::try_from(len - copied)
                    .unwrap_or(usize::MAX)
                    .min(COPY_PIECE);
                match rustix::fs::copy_file_range(src, Some(&mut off_in), out, None, want) {
                    Ok(0) => break,
                    Ok(n) => {
                        copied += n as u64;
                        copied_so_far.store(copied, Ordering::Release);
                        syncer.progress(start + copied);
                    }
                    Err(rustix::io::Errno::INTR) => {}
                    Err(e) => {
                        result = Err(io::Error::from(e));
                        break;
                    }
                }
            }
            stopped.store(true, Ordering::Release);
            let panicked = || io::Error::other("hashing thread panicked");
            let hashed = t.join().map_err(|_| panicked())?;
            let hashed2 = t2.map(|t| t.join().map_err(|_| panicked())).transpose()?;
            result.map(|()| (hashed, hashed2))
        });
        let (hashed, hashed2) = joined.map_err(out_err)?;
        let hashed = hashed.map_err(input_err(path))?;
        let hashed2 = hashed2.transpose().map_err(input_err(path))?;
        if hashed != copied || hashed2.is_some_and(|h| h != copied) || copied != len {
            return Err(input_err(path)(io::Error::other(
                "the file changed while it was copied",
            )));
        }
        self.pos += copied;
        self.syncer.progress(self.pos);
        Ok(Some(copied))
    }
}

fn copy_reader(
    path: &Path,
    mut f: impl Read,
    w: &mut HashingWriter<'_>,
    buf: &mut [u8],
) -> Result<u64, UkiError> {
    let mut total = 0u64;
    loop {
        let n = f.read(buf).map_err(input_err(path))?;
        if n == 0 {
            break;
        }
        w.put(&buf[..n])?;
        total += n as u64;
    }
    Ok(total)
}

pub(super) fn copy_content(
    c: &SectionContent,
    w: &mut HashingWriter<'_>,
    buf: &mut [u8],
) -> Result<u64, UkiError> {
    match c {
        SectionContent::Bytes(b) => {
            w.put(b)?;
            Ok(b.len() as u64)
        }
        SectionContent::File(p) => copy_file(p, w, buf),
        SectionContent::Concat(ps) => {
            let mut total = 0;
            for p in ps {
                total += copy_file(p, w, buf)?;
                if ps.len() > 1 {
                    let pad = (pe::align_up(total, 4) - total) as usize;
                    w.put(&[0u8; 4][..pad])?;
                    total += pad as u64;
                }
            }
            Ok(total)
        }
        SectionContent::Range { path, offset, len } => {
            let r = SectionContent::range_reader(path, *offset, *len)?;
            copy_reader(path, r, w, buf)
        }
    }
}
