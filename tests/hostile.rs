//! The hostile-input set (`test-vectors/hostile/`, made by `scripts/gen-hostile`) through the
//! CLI: every file must end with its expected error, a non-zero exit and no panic, within its
//! wall-time and address-space bounds; the same command on a benign file must succeed. The
//! bounds are safety nets against hangs and runaway allocation, not benchmarks.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn hostile_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("test-vectors/hostile")
}

struct Outcome {
    code: Option<i32>,
    output: String,
    elapsed: Duration,
}

/// Run the CLI with `args` under an address-space limit (`prlimit --as`, when installed) and
/// kill it after `max`: a hang fails the test instead of stalling the suite.
fn run_bounded(args: &[String], max: Duration, mem_mb: u64) -> Outcome {
    let bin = bootchain_bin();
    let mut cmd = if Path::new("/usr/bin/prlimit").exists() {
        let mut c = Command::new("/usr/bin/prlimit");
        c.arg(format!("--as={}", mem_mb << 20)).arg("--").arg(bin);
        c
    } else {
        Command::new(bin)
    };
    let t0 = Instant::now();
    let mut child = cmd
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn bootchain");
    // Drain both pipes on threads so a chatty child cannot block on a full pipe.
    let mut so = child.stdout.take().expect("stdout");
    let mut se = child.stderr.take().expect("stderr");
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = so.read_to_string(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = se.read_to_string(&mut s);
        s
    });
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if t0.elapsed() > max {
            let _ = child.kill();
            let _ = child.wait();
            panic!("bootchain {args:?} still running after {max:?}: killed");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let elapsed = t0.elapsed();
    let output = t_out.join().unwrap_or_default() + &t_err.join().unwrap_or_default();
    Outcome {
        code: status.code(),
        output,
        elapsed,
    }
}

fn expand(args: &serde_json::Value, file: &Path, dir: &Path) -> Vec<String> {
    args.as_array()
        .expect("command is an array")
        .iter()
        .map(|a| {
            a.as_str()
                .expect("command words are strings")
                .replace("{file}", &file.display().to_string())
                .replace("{dir}", &dir.display().to_string())
        })
        .collect()
}

#[test]
fn hostile_inputs_end_in_their_typed_error_within_bounds() {
    let dir = hostile_dir();
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    let cases = manifest["cases"].as_array().unwrap();
    assert!(cases.len() >= 10, "manifest lists {} cases", cases.len());
    for c in cases {
        let file = dir.join(c["file"].as_str().unwrap());
        assert!(file.exists(), "{} missing", file.display());
        let expect = c["expect"].as_str().unwrap();
        let max = Duration::from_secs(c["max_seconds"].as_u64().unwrap());
        let mem = c["max_memory_mb"].as_u64().unwrap();

        let args = expand(&c["command"], &file, &dir);
        let o = run_bounded(&args, max, mem);
        assert!(
            !o.output.contains("panicked"),
            "{args:?} panicked:\n{}",
            o.output
        );
        assert!(
            o.code.is_some_and(|c| c != 0) && o.code != Some(141),
            "{args:?} exited with {:?} (expected a non-zero exit):\n{}",
            o.code,
            o.output
        );
        assert!(
            o.output.contains(expect),
            "{args:?}: expected {expect:?} in:\n{}",
            o.output
        );
        assert!(o.elapsed <= max, "{args:?} took {:?}", o.elapsed);

        // Positive control: the same command on a benign file succeeds under the same bounds.
        let control = expand(&c["control"], &file, &dir);
        let o = run_bounded(&control, max, mem);
        assert_eq!(o.code, Some(0), "control {control:?} failed:\n{}", o.output);
    }
}

/// `bootchain … | head`: once the reader is gone, the CLI stops quietly with the status a
/// shell reports for coreutils killed by SIGPIPE, without a panic message.
#[test]
fn closed_stdout_ends_quietly() {
    let t = tempfile::tempdir().unwrap();
    // A log with enough events that `eventlog show` writes far more than a pipe buffer.
    let src = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("test-vectors/boots/sb-on/eventlog.bin"),
    )
    .unwrap();
    let mut log = bootchain::eventlog::EventLog::parse(&src).unwrap();
    let events = log.events.clone();
    for _ in 0..30 {
        log.events.extend(events.iter().cloned());
    }
    let path = t.path().join("big.bin");
    std::fs::write(&path, log.to_bytes()).unwrap();

    // Control: with a reader, the whole output arrives and the exit is 0.
    let full = Command::new(bootchain_bin())
        .args(["eventlog", "show"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(full.status.success());
    assert!(full.stdout.len() > 1 << 18, "{} bytes", full.stdout.len());

    let mut child = Command::new(bootchain_bin())
        .args(["eventlog", "show"])
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // the reader goes away
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let st = child.wait().unwrap();
    assert_eq!(st.code(), Some(141), "stderr: {err}");
    assert!(err.is_empty(), "expected a quiet exit, stderr: {err}");
}

/// An output over 4 GiB cannot be described by PE's 32-bit offsets: the builder refuses it
/// before writing anything (sparse inputs, so the test costs no disk).
#[test]
fn uki_over_4gib_is_refused_before_writing() {
    let t = tempfile::tempdir().unwrap();
    let part = |name: &str, len: u64| {
        let p = t.path().join(name);
        std::fs::File::create(&p).unwrap().set_len(len).unwrap();
        p
    };
    let a = part("a", 2200 << 20);
    let b = part("b", 2200 << 20);
    let out = t.path().join("uki.efi");
    let r = bootchain::uki::UkiBuilder::new()
        .stub(require_stub())
        .no_default_os_release()
        .section(".a", bootchain::uki::SectionContent::File(a))
        .section(".b", bootchain::uki::SectionContent::File(b))
        .build(&out);
    // SizeOfImage (32-bit) overflows first for stubs whose memory layout covers their file
    // layout; the file-offset check is the second line of defence. Either is a typed refusal.
    match r {
        Err(bootchain::uki::UkiError::OutputTooLarge { len })
        | Err(bootchain::uki::UkiError::TooLarge { len, .. }) => {
            assert!(len > u64::from(u32::MAX), "{len}")
        }
        other => panic!("expected a 4 GiB refusal, got {other:?}"),
    }
    assert!(!out.exists());
    let left: Vec<_> = std::fs::read_dir(t.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 2, "temporary files left: {left:?}");

    // Control: the same build with small sections succeeds.
    let small = part("c", 4096);
    bootchain::uki::UkiBuilder::new()
        .stub(require_stub())
        .no_default_os_release()
        .section(".a", bootchain::uki::SectionContent::File(small))
        .build(&out)
        .unwrap();
    assert!(out.exists());
}
