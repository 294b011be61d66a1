//! Disk full: outputs written into a small private tmpfs (a mount namespace of its own, so
//! nothing on the host changes) fail with the I/O error and leave no output or temporary file;
//! the same command with room succeeds (the positive control).

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::swtpm::Swtpm;
use common::*;

/// Run `script` (sh) with `$D` a fresh tmpfs of `kib` KiB, optionally filled up first; then
/// list what is left in it.
fn in_tmpfs(kib: u64, fill: bool, script: &str) -> (Output, String) {
    let fill_cmd = if fill {
        "dd if=/dev/zero of=$D/filler bs=4k 2>/dev/null; "
    } else {
        ""
    };
    let full = format!(
        "D=$(mktemp -d) && mount -t tmpfs -o size={kib}k tmpfs $D && {fill_cmd}{{ {script}; }}; rc=$?; rm -f $D/filler; echo LEFT: $(ls -A $D) >&2; exit $rc"
    );
    let out = run(Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(full));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let left = err
        .lines()
        .find_map(|l| l.strip_prefix("LEFT:"))
        .unwrap_or("?")
        .trim()
        .to_string();
    (out, left)
}

fn q(p: &Path) -> String {
    format!("'{}'", p.display())
}

#[test]
fn disk_full_leaves_no_output_or_temp_file() {
    require_tool("unshare");
    let d = tempfile::tempdir().unwrap();
    let bc = q(&bootchain_bin());
    let (key, cert) = make_key(d.path(), "db", "rsa:2048");
    let kernel = kernel();
    let build = format!(
        "{bc} uki build --stub {} --linux {} --cmdline quiet --os-release ID=t --secureboot-private-key {} --secureboot-certificate {} --output $D/uki.efi",
        q(&require_stub()),
        q(&kernel),
        q(&key),
        q(&cert)
    );
    // 1 MiB cannot hold the kernel: ENOSPC, typed, nothing left behind.
    let (out, left) = in_tmpfs(1024, false, &build);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("No space left on device"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(left, "", "files left: {left}");
    // Control: with room it works.
    let (out, left) = in_tmpfs(64 * 1024, false, &build);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(left, "uki.efi");

    // pe sign of the stub into a full filesystem.
    let sign = format!(
        "{bc} pe sign {} --key {} --cert {} --output $D/signed.efi",
        q(&require_stub()),
        q(&key),
        q(&cert)
    );
    let (out, left) = in_tmpfs(256, true, &sign);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("No space left on device"), "{err}");
    assert_eq!(left, "");
    let (out, left) = in_tmpfs(4096, false, &sign);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(left, "signed.efi");

    // seal: the envelope and its secret into a full filesystem (both or neither).
    let sw = Swtpm::start();
    let seal = format!(
        "{bc} seal --pcrs 7 --random --secret-output $D/root.key --tcti {} -o $D/root.sealed",
        sw.tcti()
    );
    let (out, left) = in_tmpfs(256, true, &seal);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("No space left on device"), "{err}");
    assert_eq!(left, "");
    let (out, left) = in_tmpfs(256, false, &seal);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(left, "root.key root.sealed");
}
