//! Criterion benchmark: PCR 4, 7 and 11 for 1,000 UKIs that share a kernel and differ in
//! command line and initrd, with a [`DigestCache`]: the kernel is hashed once, so the cost
//! grows with the new bytes (each image's initrd and command line), not with the number of
//! images. The figure printed is the ratio to the floor it names: one SHA-256 pass over the
//! distinct input bytes (the kernel once, every initrd and command line once).
//!
//! The kernel is the one `scripts/fetch-kernel` caches (`.cache/kernel/boot/vmlinuz-*`), else
//! the systemd stub standing in for it. A UKI's own Authenticode digest (its first PCR 4
//! image event) covers every byte of that image, kernel included, so it cannot be shared
//! between images: it comes from the image's build (`BuildReport::authenticode_sha256`),
//! here a stand-in digest per image. BOOTCHAIN_BENCH_IMAGES (default 1000) and
//! BOOTCHAIN_BENCH_INITRD_KIB (default 64) set the shape.

use std::path::{Path, PathBuf};
use std::time::Instant;

use bootchain::cache::DigestCache;
use bootchain::firmware::{predict_pcr4, predict_pcr7, BootImage, SecureBootState};
use bootchain::hash::HashAlg;
use bootchain::measure::phase_list;
use bootchain::uki::DEFAULT_STUB;
use bootchain::ukiread::UkiSection;
use criterion::{criterion_group, criterion_main, Criterion};

struct Variant {
    cmdline: PathBuf,
    initrd: PathBuf,
}

fn kernel() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/kernel/boot");
    std::fs::read_dir(&dir)
        .ok()
        .and_then(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path())).find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
            })
        })
        .unwrap_or_else(|| PathBuf::from(DEFAULT_STUB))
}

fn setup(dir: &Path, n: usize, initrd_kib: usize) -> Vec<Variant> {
    let mut x = 0x9e3779b97f4a7c15u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x as u8
    };
    (0..n)
        .map(|i| {
            let cmdline = dir.join(format!("cmdline{i}"));
            std::fs::write(
                &cmdline,
                format!("root=UUID=0000-{i:04} console=ttyS0 quiet"),
            )
            .unwrap();
            let initrd = dir.join(format!("initrd{i}"));
            let bytes: Vec<u8> = (0..initrd_kib << 10).map(|_| next()).collect();
            std::fs::write(&initrd, bytes).unwrap();
            Variant { cmdline, initrd }
        })
        .collect()
}

/// PCR 4, 7 and 11 (final values, sha256) of every variant.
fn predict_all(
    cache: &DigestCache,
    kernel: &Path,
    variants: &[Variant],
    state: &SecureBootState,
) -> usize {
    let banks = [HashAlg::Sha256];
    let phases = phase_list(&["enter-initrd"]).unwrap();
    let mut n = 0;
    for (i, v) in variants.iter().enumerate() {
        let parts = [
            (UkiSection::Linux, kernel),
            (UkiSection::Cmdline, v.cmdline.as_path()),
            (UkiSection::Initrd, v.initrd.as_path()),
        ];
        let pcr11 = cache.predict_parts(&parts, &banks, &phases).unwrap();
        let uki = BootImage {
            description: format!("UKI {i}"),
            authenticode: [(HashAlg::Sha256, HashAlg::Sha256.digest(&i.to_le_bytes()))].into(),
        };
        let k = cache
            .boot_image("kernel from .linux", kernel, &banks)
            .unwrap();
        let pcr4 = predict_pcr4(&[uki, k], &banks);
        let pcr7 = predict_pcr7(state, &[], &banks);
        n += pcr11.phases.len() + pcr4.values.len() + pcr7.values.len();
    }
    n
}

fn bench(c: &mut Criterion) {
    let images: usize = std::env::var("BOOTCHAIN_BENCH_IMAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let kib: usize = std::env::var("BOOTCHAIN_BENCH_INITRD_KIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let kernel = kernel();
    if !kernel.exists() {
        eprintln!("SKIPPING predict_many: no kernel (scripts/fetch-kernel) and no {DEFAULT_STUB}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let variants = setup(dir.path(), images, kib);
    let state = SecureBootState {
        enabled: false,
        pk: Vec::new(),
        kek: Vec::new(),
        db: Vec::new(),
        dbx: Vec::new(),
    };

    // The floor: one SHA-256 pass over the distinct bytes, read from the page cache.
    let mut files = vec![kernel.clone()];
    files.extend(
        variants
            .iter()
            .flat_map(|v| [v.cmdline.clone(), v.initrd.clone()]),
    );
    let floor = |files: &[PathBuf]| {
        let t = Instant::now();
        let mut bytes = 0u64;
        for f in files {
            let mut h = bootchain::hash::MultiHasher::new(&[HashAlg::Sha256]);
            bytes += std::io::copy(&mut std::fs::File::open(f).unwrap(), &mut h).unwrap();
            h.finalize();
        }
        (t.elapsed(), bytes)
    };
    let (t_floor, distinct) = (0..3).map(|_| floor(&files)).min().unwrap();

    let cached = |variants: &[Variant]| {
        let cache = DigestCache::new();
        let t = Instant::now();
        predict_all(&cache, &kernel, variants, &state);
        (t.elapsed(), cache.hashed_bytes())
    };
    let (t_cached, hashed) = (0..3).map(|_| cached(&variants)).min().unwrap();
    // Without sharing (a fresh cache per image), on a sample of 20, scaled.
    let sample = variants.len().min(20);
    let t = Instant::now();
    for v in &variants[..sample] {
        predict_all(
            &DigestCache::new(),
            &kernel,
            std::slice::from_ref(v),
            &state,
        );
    }
    let t_uncached = t.elapsed().as_secs_f64() * variants.len() as f64 / sample as f64;
    println!(
        "predict-many: PCR 4/7/11 for {images} UKIs ({} byte kernel, {kib} KiB initrds): {:.1} ms, \
         {hashed} bytes hashed; floor (one SHA-256 pass over the {distinct} distinct bytes) {:.1} ms: \
         ratio {:.2}; without the cache (from {sample} images) {:.0} ms",
        std::fs::metadata(&kernel).unwrap().len(),
        t_cached.as_secs_f64() * 1e3,
        t_floor.as_secs_f64() * 1e3,
        t_cached.as_secs_f64() / t_floor.as_secs_f64(),
        t_uncached * 1e3,
    );

    let mut g = c.benchmark_group("predict_many");
    g.sample_size(10);
    g.bench_function(format!("PCR 4/7/11, {images} UKIs sharing a kernel"), |b| {
        b.iter(|| predict_all(&DigestCache::new(), &kernel, &variants, &state))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
