//! Criterion benchmark: event-log verification throughput, what a verifier does per quote
//! once the signature is checked — parse the log, replay the quoted bank, compare with the
//! reference (`bootchain::attest::verify_log`) — on the real boot logs in
//! test-vectors/boots/. Single-threaded, so the rate is per core; printed with its ratio to
//! the target of 10,000 logs/s/core.

use std::path::Path;
use std::time::{Duration, Instant};

use bootchain::attest::{verify_log, Reference};
use bootchain::eventlog::EventLog;
use bootchain::hash::HashAlg;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const TARGET_PER_CORE: f64 = 10_000.0;

/// (log bytes, sha256 reference) of every boot vector.
fn inputs() -> Vec<(Vec<u8>, Reference)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("test-vectors/boots");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path().join("eventlog.bin")))
        .filter(|p| p.exists())
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            let mut r = Reference::from_log(&EventLog::parse(&bytes).unwrap());
            r.values.retain(|(b, _), _| *b == HashAlg::Sha256);
            (bytes, r)
        })
        .collect()
}

fn verify_all(inputs: &[(Vec<u8>, Reference)]) {
    for (bytes, r) in inputs {
        let log = EventLog::parse(bytes).unwrap();
        let checked = verify_log(&log, r).unwrap();
        assert!(!checked.checked.is_empty());
    }
}

fn bench(c: &mut Criterion) {
    let inputs = inputs();
    assert!(!inputs.is_empty(), "no boot logs in test-vectors/boots");
    let mut g = c.benchmark_group("attest");
    g.throughput(Throughput::Elements(inputs.len() as u64));
    g.bench_function(
        format!(
            "eventlog verify (parse + replay + reference), {} logs",
            inputs.len()
        ),
        |b| b.iter(|| verify_all(&inputs)),
    );
    g.finish();
    // The headline number, measured directly so that it can be printed with its ratio.
    let start = Instant::now();
    let mut logs = 0usize;
    while start.elapsed() < Duration::from_secs(2) {
        verify_all(&inputs);
        logs += inputs.len();
    }
    let rate = logs as f64 / start.elapsed().as_secs_f64();
    let sizes: Vec<String> = inputs.iter().map(|(b, _)| b.len().to_string()).collect();
    println!(
        "attest: event-log verify {rate:.0} logs/s/core (logs of {} bytes); target {TARGET_PER_CORE:.0}: ratio {:.2}",
        sizes.join(", "),
        rate / TARGET_PER_CORE
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
