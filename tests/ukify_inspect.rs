//! `bootchain uki inspect --format ukify` against ukify 257's `inspect` (Debian 13, the cached
//! trixie chroot of `scripts/trixie-tools`): byte-identical stdout for the plain output, the
//! default section set, `--all`, `--json=short`, `--json=pretty` (non-ASCII text escaped,
//! repeated profile sections collapsed), `--section` selectors (text shown as binary, binary
//! shown as text, not valid UTF-8), and the bytes a `--section NAME:MODE@FILE` extracts.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// The trixie chroot's root on the host.
fn trixie_root() -> PathBuf {
    require_tool("mmdebstrap");
    let out = run_ok(Command::new(repo_root().join("scripts/trixie-tools")).arg("--path"));
    PathBuf::from(out.trim())
}

fn build(dir: &Path, args: &[&str], out: &str) {
    run_ok(
        Command::new(bootchain_bin())
            .current_dir(dir)
            .args(["uki", "build"])
            .args(args)
            .arg("--output")
            .arg(out),
    );
}

fn theirs(dir: &Path, args: &[&str]) -> Vec<u8> {
    let mut a = vec!["ukify", "inspect"];
    a.extend_from_slice(args);
    let out = run(&mut trixie_tools(dir, &[], &a));
    assert!(
        out.status.success(),
        "ukify inspect {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn ours(dir: &Path, args: &[&str]) -> Vec<u8> {
    let out = run(Command::new(bootchain_bin())
        .current_dir(dir)
        .args(["uki", "inspect", "--format", "ukify"])
        .args(args));
    assert!(
        out.status.success(),
        "bootchain uki inspect {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn same(dir: &Path, args: &[&str]) -> String {
    // ukify's argparse wants the file right after the verb.
    let (t, o) = (theirs(dir, args), ours(dir, args));
    assert!(
        t == o,
        "inspect {args:?} differs\n--- ukify 257:\n{}\n--- bootchain:\n{}",
        String::from_utf8_lossy(&t),
        String::from_utf8_lossy(&o)
    );
    String::from_utf8_lossy(&o).into_owned()
}

#[test]
fn inspect_output_equals_ukify_257() {
    let root = trixie_root();
    let efi = root.join("usr/lib/systemd/boot/efi");
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    std::fs::copy(efi.join("linuxx64.efi.stub"), p.join("stub.efi")).unwrap();
    std::fs::copy(efi.join("addonx64.efi.stub"), p.join("addon-stub.efi")).unwrap();
    std::fs::copy(kernel(), p.join("vmlinuz")).unwrap();
    std::fs::write(p.join("initrd"), pseudo_random(100_003, 3)).unwrap();
    std::fs::write(p.join("ucode"), pseudo_random(5_003, 4)).unwrap();
    std::fs::write(
        p.join("osrel"),
        "ID=bootchain-test\nPRETTY_NAME=\"Dëbian ☃ 𝔘𝔎𝔍\"\n\n  \nVERSION_ID=1\n",
    )
    .unwrap();
    std::fs::write(p.join("profile"), "ID=base\nTITLE=Base").unwrap();
    build(
        p,
        &[
            "--stub=addon-stub.efi",
            "--profile=ID=one\nTITLE=Profile one",
            "--cmdline=console=ttyS0 one",
        ],
        "p1.efi",
    );
    build(
        p,
        &[
            "--stub=stub.efi",
            "--linux=vmlinuz",
            "--initrd=initrd",
            "--microcode=ucode",
            "--cmdline=console=ttyS0 root=/dev/vda2  ",
            "--os-release=@osrel",
            "--uname=6.1.0-test",
            "--profile=@profile",
            "--join-profile=p1.efi",
        ],
        "uki.efi",
    );

    let plain = same(p, &["uki.efi"]);
    assert!(plain.contains(".cmdline:\n  size: "), "{plain}");
    assert!(
        plain.contains("  text:\n    console=ttyS0 root=/dev/vda2\n"),
        "{plain}"
    );
    // Both profiles' sections are listed.
    assert_eq!(plain.matches(".profile:\n").count(), 2, "{plain}");
    same(p, &["uki.efi", "--all"]);
    let short = same(p, &["uki.efi", "--json=short"]);
    assert!(short.contains("\\u00ebbian \\u2603 \\ud835"), "{short}");
    assert!(!short.ends_with('\n'));
    same(p, &["uki.efi", "--json=pretty"]);
    same(p, &["uki.efi", "--all", "--json=pretty"]);
    // Selectors: a text section as binary, binary ones as text (one not valid UTF-8), one
    // absent, trailing junk after the mode ignored.
    same(
        p,
        &[
            "uki.efi",
            "--section=.osrel:binary",
            "--section=.initrd:text",
            "--section=.sbat:textual",
            "--section=.nothere:text",
        ],
    );
    same(p, &["uki.efi", "--section=.sdmagic:text", "--json=short"]);

    // Extraction: the same bytes, trailing NULs kept; the description printed as well.
    let extract = |spec: &str, extra: &[&str], name: &str| {
        let theirs_spec = format!("--section={spec}@/w/{name}.ukify");
        let ours_spec = format!("--section={spec}@{name}.ours");
        let mut a = vec!["uki.efi", theirs_spec.as_str()];
        a.extend_from_slice(extra);
        let t = theirs(p, &a);
        a[1] = ours_spec.as_str();
        let o = ours(p, &a);
        assert!(
            t == o,
            "{spec}: stdout differs\n{}\n{}",
            String::from_utf8_lossy(&t),
            String::from_utf8_lossy(&o)
        );
        let (a, b) = (
            std::fs::read(p.join(format!("{name}.ukify"))).unwrap(),
            std::fs::read(p.join(format!("{name}.ours"))).unwrap(),
        );
        assert!(a == b, "{spec}: extracted bytes differ");
        (String::from_utf8_lossy(&o).into_owned(), a)
    };
    let (t, bytes) = extract(".cmdline:text", &[], "cmdline");
    assert!(t.starts_with(".cmdline:\n"), "{t}");
    // The last .cmdline (profile 1's) wins, as in ukify.
    assert!(bytes.starts_with(b"console=ttyS0 one"), "{bytes:?}");
    let (t, _) = extract(".linux:binary", &["--json=short"], "linux");
    assert!(t.starts_with("{\".linux\": {\"size\": "), "{t}");
}
