//! Criterion benchmark: `reference-values` for a signed UKI (sha256 bank; PCR 4, 7, 9, 11 with
//! Secure Boot on, TDX RTMR[1]/[2]), i.e. the Authenticode hashes, section digests and the
//! db signature check. Set BOOTCHAIN_BENCH_INITRD_MIB (default 32) for the initrd size.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use bootchain::firmware::{variable_from_file, EfiGuid, SecureBootState};
use bootchain::keys::{load_certificate, SigningKey};
use bootchain::reference::{reference_values, ReferenceRequest};
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
    let initrd: Vec<u8> = chunk.iter().copied().cycle().take(mib << 20).collect();
    std::fs::write(dir.join("initrd"), &initrd).unwrap();
    std::fs::write(dir.join("kernel"), &chunk).unwrap();
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
    UkiBuilder::new()
        .linux(dir.join("kernel"))
        .initrd(dir.join("initrd"))
        .uname("bench")
        .cmdline(SectionContent::Bytes(b"quiet".to_vec()))
        .os_release(SectionContent::Bytes(b"ID=bench\n".to_vec()))
        .sign_with(
            SigningKey::from_file(&dir.join("db.key")).unwrap(),
            load_certificate(&dir.join("db.crt")).unwrap(),
            SignOptions::default(),
        )
        .build(&dir.join("uki.efi"))
        .unwrap();
}

fn bench(c: &mut Criterion) {
    if !Path::new(DEFAULT_STUB).exists() {
        eprintln!("SKIPPING benches: {DEFAULT_STUB} missing (apt-get install systemd-boot-efi)");
        return;
    }
    let mib: usize = std::env::var("BOOTCHAIN_BENCH_INITRD_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32);
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path(), mib);
    let uki = dir.path().join("uki.efi");
    let owner: EfiGuid = "b0075c4a-7e5b-4c48-9b8e-bc0eb0075c4a".parse().unwrap();
    let cert = variable_from_file(&dir.path().join("db.crt"), Some(owner)).unwrap();
    let state = SecureBootState {
        enabled: true,
        pk: cert.clone(),
        kek: cert.clone(),
        db: cert,
        dbx: Vec::new(),
    };
    let mut req = ReferenceRequest::new(&uki);
    req.secure_boot = Some((&state, &[]));
    req.tdx = Some(false);
    // One timed run, printed, so the figure shows without criterion's report.
    let t = Instant::now();
    let refs = reference_values(&req).unwrap();
    let once = t.elapsed();
    let size = std::fs::metadata(&uki).unwrap().len();
    println!(
        "reference-values: {} registers for a {:.1} MiB UKI in {:.1} ms",
        refs.registers().len(),
        size as f64 / (1 << 20) as f64,
        once.as_secs_f64() * 1e3
    );
    let mut g = c.benchmark_group("reference");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(size));
    g.bench_function(format!("reference values, {mib} MiB initrd"), |b| {
        b.iter(|| {
            let r = reference_values(&req).unwrap();
            (r.rvps_message().unwrap(), r.cel_json())
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
