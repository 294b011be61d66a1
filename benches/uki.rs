//! Criterion benchmarks: UKI build + sign with a large initrd, and the Authenticode hash.
//! `scripts/bench` runs the same job side by side with objcopy, sbsign, pesign and openssl.
//! Set BOOTCHAIN_BENCH_INITRD_MIB (default 100) to change the initrd size.

use std::path::Path;
use std::process::Command;

use bootchain::hash::HashAlg;
use bootchain::keys::{load_certificate, SigningKey};
use bootchain::sign::SignOptions;
use bootchain::uki::{SectionContent, UkiBuilder, DEFAULT_STUB};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn setup(dir: &Path, mib: usize) {
    let mut x = 0x9e3779b97f4a7c15u64;
    let chunk: Vec<u8> = (0..1 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let mut initrd = Vec::with_capacity(mib << 20);
    for _ in 0..mib {
        initrd.extend_from_slice(&chunk);
    }
    std::fs::write(dir.join("initrd"), &initrd).unwrap();
    std::fs::write(dir.join("kernel"), &chunk[..(8 << 20).min(chunk.len())]).unwrap();
    let ok = Command::new("openssl")
        .args([
            "req", "-new", "-x509", "-nodes", "-days", "3", "-newkey", "rsa:2048",
        ])
        .args(["-subj", "/CN=bench/", "-keyout"])
        .arg(dir.join("db.key"))
        .arg("-out")
        .arg(dir.join("db.crt"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(ok, "openssl is needed to make the benchmark key");
}

fn bench(c: &mut Criterion) {
    if !Path::new(DEFAULT_STUB).exists() {
        eprintln!("SKIPPING benches: {DEFAULT_STUB} missing (apt-get install systemd-boot-efi)");
        return;
    }
    let mib: usize = std::env::var("BOOTCHAIN_BENCH_INITRD_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path(), mib);
    let out = dir.path().join("uki.efi");
    let mut g = c.benchmark_group("uki");
    g.sample_size(10);
    g.throughput(Throughput::Bytes((mib as u64) << 20));
    g.bench_function(format!("build+sign, {mib} MiB initrd"), |b| {
        b.iter(|| {
            UkiBuilder::new()
                .linux(dir.path().join("kernel"))
                .initrd(dir.path().join("initrd"))
                .uname("bench")
                .os_release(SectionContent::Bytes(b"ID=bench\n".to_vec()))
                .sign_with(
                    SigningKey::from_file(&dir.path().join("db.key")).unwrap(),
                    load_certificate(&dir.path().join("db.crt")).unwrap(),
                    SignOptions::default(),
                )
                .build(&out)
                .unwrap()
        })
    });
    g.bench_function(format!("authenticode sha256, {mib} MiB UKI"), |b| {
        b.iter(|| {
            let mut f = std::fs::File::open(&out).unwrap();
            bootchain::authenticode::image_digests(&mut f, &[HashAlg::Sha256]).unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
