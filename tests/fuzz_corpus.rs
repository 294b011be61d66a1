//! Replays every committed fuzz corpus file (`test-vectors/fuzz/<target>/`) through the same
//! entry point the cargo-fuzz target calls (`bootchain::fuzzing`), so the normal suite checks
//! them without cargo-fuzz: no panic, the entry's own assertions hold, and each file finishes
//! well inside the fuzzers' 2-second timeout.

use std::path::Path;
use std::time::{Duration, Instant};

/// Per-file bound: the fuzzers ran with `-timeout=2` on optimised builds; tests run
/// unoptimised library code (dependencies are optimised), so allow more.
const PER_FILE: Duration = Duration::from_secs(10);

#[test]
fn every_corpus_file_replays_cleanly() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("test-vectors/fuzz");
    let mut total = 0;
    for (target, entry) in bootchain::fuzzing::TARGETS {
        let dir = root.join(target);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "no corpus for {target}");
        for f in &files {
            let data = std::fs::read(f).unwrap();
            let t0 = Instant::now();
            let r = std::panic::catch_unwind(|| entry(&data));
            assert!(r.is_ok(), "{target}: {} panicked", f.display());
            let dt = t0.elapsed();
            assert!(dt < PER_FILE, "{target}: {} took {dt:?}", f.display());
        }
        total += files.len();
    }
    assert!(total > 0);
}

/// Every cargo-fuzz target has an entry here (and so a replayed corpus), and vice versa.
#[test]
fn targets_match_fuzz_crate() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/fuzz_targets");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    let mut names: Vec<String> = bootchain::fuzzing::TARGETS
        .iter()
        .map(|(n, _)| format!("{n}.rs"))
        .collect();
    names.sort();
    assert_eq!(files, names);
}
