//! bootchain as a drop-in for ukify 257 in real pipelines, with Debian 13's ukify as the
//! oracle (the trixie chroot of `scripts/trixie-tools`):
//! - a `ukify.conf` (`--config`) gives the same UKI as ukify reading the same file;
//! - mkosi's command lines (mkosi v26, `run_ukify`/`build_uki`/`build_uki_profiles`), run
//!   through the `ukify` Python script with `python3` exactly as mkosi runs them, give the
//!   same bytes as ukify 257, and `--version` reads as mkosi parses it.
//!
//! Configparser itself is checked against Python's `configparser` on tricky files.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn trixie_root() -> PathBuf {
    require_tool("mmdebstrap");
    let out = run_ok(Command::new(repo_root().join("scripts/trixie-tools")).arg("--path"));
    PathBuf::from(out.trim())
}

/// Inputs in one directory, bound at /w in the chroot; every path is relative to it.
fn inputs() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let efi = trixie_root().join("usr/lib/systemd/boot/efi");
    std::fs::copy(efi.join("linuxx64.efi.stub"), p.join("stub.efi")).unwrap();
    std::fs::copy(efi.join("addonx64.efi.stub"), p.join("addon-stub.efi")).unwrap();
    std::fs::copy(kernel(), p.join("vmlinuz")).unwrap();
    std::fs::write(p.join("initrd1"), pseudo_random(100_003, 1)).unwrap();
    std::fs::write(p.join("initrd2"), pseudo_random(50_001, 2)).unwrap();
    std::fs::write(p.join("initrd3"), pseudo_random(7_001, 3)).unwrap();
    std::fs::write(p.join("ucode"), pseudo_random(5_003, 4)).unwrap();
    std::fs::write(p.join("osrel"), "ID=bootchain-test\nVERSION_ID=1\n").unwrap();
    for name in ["pcr1", "pcr2"] {
        let key = p.join(format!("{name}.key"));
        run_ok(
            Command::new("openssl")
                .args(["genrsa", "-out"])
                .arg(&key)
                .arg("2048"),
        );
        run_ok(
            Command::new("openssl")
                .args(["rsa", "-pubout", "-in"])
                .arg(&key)
                .arg("-out")
                .arg(p.join(format!("{name}.pub"))),
        );
    }
    dir
}

fn ukify_257(dir: &Path, args: &[&str]) {
    let mut a = vec!["ukify"];
    a.extend_from_slice(args);
    run_ok(&mut trixie_tools(dir, &[], &a));
}

fn assert_same(dir: &Path, theirs: &str, ours: &str) {
    if std::env::var_os("KEEP").is_some() {
        let _ = std::fs::remove_dir_all("/tmp/kept");
        run_ok(Command::new("cp").arg("-r").arg(dir).arg("/tmp/kept"));
    }
    let (a, b) = (
        std::fs::read(dir.join(theirs)).unwrap(),
        std::fs::read(dir.join(ours)).unwrap(),
    );
    assert!(
        a == b,
        "{ours} differs from ukify 257's {theirs} ({} vs {} bytes; first difference at {:?})",
        b.len(),
        a.len(),
        a.iter().zip(&b).position(|(x, y)| x != y)
    );
}

/// A ukify.conf with both list keys, a literal command line to collapse, an @FILE os-release,
/// two `[PCRSignature:NAME]` groups with multi-line Phases=, a comment, an unknown key, and a
/// command line that adds an initrd (after the file's) and overrides Uname=.
#[test]
fn ukify_conf_builds_what_ukify_builds() {
    let d = inputs();
    let p = d.path();
    std::fs::write(
        p.join("ukify.conf"),
        "# bootchain test\n\
         [UKI]\n\
         Linux = vmlinuz\n\
         Initrd = initrd1\n   initrd2\n\
         Microcode = ucode\n\
         Cmdline = console=ttyS0    root=/dev/vda2  # the root\n\
         OSRelease = @osrel\n\
         Uname = from-the-file\n\
         Stub = stub.efi\n\
         PCRBanks = sha256\n\
         NoSuchKey = 1\n\
         \n\
         [PCRSignature:initrd]\n\
         PCRPrivateKey = pcr1.key\n\
         PCRPublicKey = pcr1.pub\n\
         Phases = enter-initrd\n\
         \n\
         [PCRSignature:system]\n\
         PCRPrivateKey = pcr2.key\n\
         PCRPublicKey = pcr2.pub\n\
         Phases = enter-initrd:leave-initrd\n\
         \x20 enter-initrd:leave-initrd:sysinit\n",
    )
    .unwrap();
    let cli = [
        "build",
        "--config=ukify.conf",
        "--initrd=initrd3",
        "--uname=6.1.0-test",
    ];
    ukify_257(p, &[&cli[..], &["--output=theirs.efi"]].concat());
    let out = run(Command::new(bootchain_bin())
        .current_dir(p)
        .arg("uki")
        .args(cli)
        .arg("--output=ours.efi"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Unknown config setting [UKI] NoSuchKey="),
        "{stderr}"
    );
    assert_same(p, "theirs.efi", "ours.efi");

    // The file's initrds come first, then the command line's; the command line's Uname wins.
    let initrd = bootchain::uki::read_section(&p.join("ours.efi"), ".initrd")
        .unwrap()
        .unwrap();
    assert!(initrd.starts_with(&std::fs::read(p.join("initrd1")).unwrap()));
    // Each part is padded to 4 bytes (ukify's join_initrds).
    let third = (100_003usize.div_ceil(4) + 50_001usize.div_ceil(4)) * 4;
    assert!(initrd[third..].starts_with(&std::fs::read(p.join("initrd3")).unwrap()));
    let uname = bootchain::uki::read_section(&p.join("ours.efi"), ".uname")
        .unwrap()
        .unwrap();
    assert_eq!(uname, b"6.1.0-test");

    // A malformed file is refused, naming the line, and nothing is written.
    std::fs::write(p.join("bad.conf"), "[UKI]\nLinux vmlinuz\n").unwrap();
    let out = run(Command::new(bootchain_bin()).current_dir(p).args([
        "uki",
        "build",
        "--config=bad.conf",
        "--output=bad.efi",
    ]));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 2"));
    assert!(!p.join("bad.efi").exists());
}

/// mkosi v26's ukify command lines (read from `mkosi/__init__.py`: `run_ukify`, `build_uki`,
/// `build_uki_profiles`), run as mkosi runs them: `python3 <ukify> build …`, with the
/// command line in a NUL-terminated `@file`.
#[test]
fn mkosi_command_lines_give_ukify_257_bytes() {
    require_tool("python3");
    require_tool("sbsign");
    require_tool("sbverify");
    let d = inputs();
    let p = d.path();
    std::fs::write(p.join("cmdline"), "console=ttyS0 root=/dev/vda2 quiet\0").unwrap();
    std::fs::write(p.join("p1.profile"), "ID=debug\nTITLE=\"Debug shell\"\n").unwrap();
    let shim = repo_root().join("bins/bootchain/ukify");
    fn strs(v: &[String]) -> Vec<&str> {
        v.iter().map(String::as_str).collect()
    }
    let mkosi_ours = |args: &[&str]| {
        let out = run(Command::new("python3")
            .arg(&shim)
            .args(args)
            .env("BOOTCHAIN", bootchain_bin())
            .current_dir(p));
        assert!(
            out.status.success(),
            "python3 ukify {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };

    // systemd_tool_version(): the third word, "(" ")" stripped, "v" prefix removed.
    let version = mkosi_ours(&["--version"]);
    let third = version.split_whitespace().nth(2).unwrap();
    let v = third.trim_matches(|c| c == '(' || c == ')');
    let major: u32 = v.split(['.', '-']).next().unwrap().parse().unwrap();
    assert_eq!(major, 257, "{version}");

    // A profile PE (build_uki_profiles): the addon stub, --profile @file, no kernel.
    let profile = |out: &str| {
        vec![
            "build".to_string(),
            "--profile".into(),
            "@p1.profile".into(),
            "--efi-arch".into(),
            "x64".into(),
            "--stub".into(),
            "addon-stub.efi".into(),
            "--output".into(),
            out.into(),
            "--cmdline".into(),
            "@cmdline".into(),
        ]
    };
    let t = profile("p1.theirs.efi");
    ukify_257(p, &strs(&t));
    let o = profile("p1.ours.efi");
    mkosi_ours(&strs(&o));
    assert_same(p, "p1.theirs.efi", "p1.ours.efi");

    // The main UKI (build_uki + run_ukify) with a joined profile, microcode and a signed PCR
    // policy; mkosi passes no --phases, so both sign systemd-measure's default phases.
    let main = |out: &str, join: &str| {
        [
            "build",
            "--os-release",
            "@osrel",
            "--uname",
            "6.1.0-test",
            "--linux",
            "vmlinuz",
            "--join-profile",
            join,
            "--pcr-banks",
            "sha256",
            "--pcr-public-key",
            "pcr1.pub",
            "--pcr-private-key",
            "pcr1.key",
            "--microcode",
            "ucode",
            "--initrd",
            "initrd1",
            "--initrd",
            "initrd2",
            "--efi-arch",
            "x64",
            "--stub",
            "stub.efi",
            "--output",
            out,
            "--cmdline",
            "@cmdline",
        ]
        .map(str::to_string)
        .to_vec()
    };
    ukify_257(p, &strs(&main("main.theirs.efi", "p1.theirs.efi")));
    mkosi_ours(&strs(&main("main.ours.efi", "p1.ours.efi")));
    assert_same(p, "main.theirs.efi", "main.ours.efi");

    // With Secure Boot (run_ukify's signing options and build_uki's --sign-kernel). ukify
    // runs the host's sbsign through --tools (the chroot has none); bootchain accepts --tools
    // and signs itself. sbsign puts a signingTime (and S/MIME capabilities) in every
    // signature, so ukify's signed output changes every second: compare everything but the
    // signatures. The kernel is an unsigned PE (the addon stub stands in), which both sign.
    run_ok(
        Command::new(bootchain_bin())
            .current_dir(p)
            .args(["uki", "genkey", "--secureboot-private-key=sb.key"])
            .arg("--secureboot-certificate=sb.crt"),
    );
    std::fs::create_dir(p.join("tools")).unwrap();
    std::fs::copy("/usr/bin/sbsign", p.join("tools/sbsign")).unwrap();
    std::fs::copy(p.join("addon-stub.efi"), p.join("unsigned-kernel")).unwrap();
    let signed = |out: &str, join: &str| {
        let mut v = main(out, join);
        let at = v.iter().position(|a| a == "vmlinuz").unwrap();
        v[at] = "unsigned-kernel".into();
        v.extend(
            [
                "--sign-kernel",
                "--signtool",
                "sbsign",
                "--secureboot-private-key",
                "sb.key",
                "--secureboot-certificate",
                "sb.crt",
                "--tools",
                "tools",
            ]
            .map(str::to_string),
        );
        v
    };
    ukify_257(p, &strs(&signed("signed.theirs.efi", "p1.theirs.efi")));
    mkosi_ours(&strs(&signed("signed.ours.efi", "p1.ours.efi")));
    let cert = bootchain::keys::load_certificate(&p.join("sb.crt")).unwrap();
    let (theirs, ours) = (
        bootchain::uki::inspect(&p.join("signed.theirs.efi")).unwrap(),
        bootchain::uki::inspect(&p.join("signed.ours.efi")).unwrap(),
    );
    let names = |i: &bootchain::uki::UkiInfo| {
        i.sections
            .iter()
            .map(|s| s.name.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&theirs), names(&ours));
    for (t, o) in theirs.sections.iter().zip(&ours.sections) {
        // .linux carries the kernel's signature; PCR 11, hence .pcrsig, covers it.
        if t.name != ".linux" && t.name != ".pcrsig" {
            assert_eq!(t.sha256, o.sha256, "section {} differs", t.name);
        }
    }
    // The embedded kernels: same Authenticode hash (signatures excluded), both signed by us.
    let mut digests = Vec::new();
    for f in ["signed.theirs.efi", "signed.ours.efi"] {
        let linux = bootchain::uki::read_section(&p.join(f), ".linux")
            .unwrap()
            .unwrap();
        let k = p.join(format!("{f}.linux"));
        std::fs::write(&k, &linux).unwrap();
        let v = bootchain::sign::verify_file(&k, None, Some(&cert)).unwrap();
        assert!(v.passed(true), "{f}: the embedded kernel's signature");
        digests.push(
            bootchain::authenticode::image_digests(
                &mut std::fs::File::open(&k).unwrap(),
                &[bootchain::hash::HashAlg::Sha256],
            )
            .unwrap(),
        );
        // sbverify (the peer) accepts the UKI.
        run_ok(
            Command::new("sbverify")
                .arg("--cert")
                .arg(p.join("sb.crt"))
                .arg(p.join(f)),
        );
    }
    assert_eq!(digests[0], digests[1]);
}

/// Our configparser against Python's on files with the rules that trip hand-written INI
/// readers: inline comments only after whitespace, continuation lines, blank lines ending a
/// value, repeated sections and keys, `[DEFAULT]` inheritance, `=` inside values, CRLF.
#[test]
fn configparser_matches_python() {
    require_tool("python3");
    let cases = [
        "[UKI]\nA=1\nB = x#not a comment\nC = y # comment\n# full\n  ; not a comment = z\n",
        "[UKI]\nInitrd = a\n   b\n\n   c = 3\n[UKI]\nA = again\nA=last\n",
        "[DEFAULT]\nD=d\n[UKI]\nX=a=b=c\n[PCRSignature:x]\nPhases=a\n\tb\n  \n",
        "[UKI]\r\nK = v\r\n  w\r\n[Other] trailing\r\nZ=\r\n",
        "[a]b]\nk=v\n\n\n[UKI]\n  indented = yes\n",
    ];
    let py = r#"
import configparser, json, sys
cp = configparser.ConfigParser(comment_prefixes='#', inline_comment_prefixes='#',
    delimiters='=', empty_lines_in_values=False, interpolation=None, strict=False)
cp.optionxform = lambda o: o
cp.read_string(sys.stdin.read())
print(json.dumps({s: dict(v) for s, v in cp.items()}, sort_keys=True))
"#;
    for text in cases {
        let mut child = Command::new("python3")
            .args(["-c", py])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "python rejected {text:?}");
        let theirs: std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>> =
            serde_json::from_slice(&out.stdout).unwrap();
        let mut ours = bootchain::configparser::parse(text).unwrap().to_map();
        // Python always has a (possibly empty) DEFAULT section.
        ours.entry("DEFAULT".to_string()).or_default();
        assert_eq!(ours, theirs, "{text:?}");
    }
}

/// Options ukify takes that change nothing in the image: `--json=short` (mkosi passes it),
/// `--no-measure`, and the default output name (`<kernel>.unsigned.efi` in the working
/// directory); and options bootchain cannot honour are refused by name, writing nothing.
#[test]
fn ukify_option_forms() {
    let d = inputs();
    let p = d.path();
    let base = [
        "ukify",
        "--stub=stub.efi",
        "build",
        "--linux=vmlinuz",
        "--os-release=ID=x",
        "--cmdline=quiet",
        "--uname=6.1.0-test",
    ];
    let out = run(Command::new(bootchain_bin())
        .current_dir(p)
        .args(base)
        .args(["--measure", "--no-measure", "--json=short"]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().count(), 1, "one JSON line: {stdout}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert!(
        report.get("pcr11").is_some_and(|v| v.is_null()),
        "--no-measure given last wins"
    );
    assert!(p.join("vmlinuz.unsigned.efi").is_file());

    for refused in [
        "--signing-engine=tpm2",
        "--secureboot-certificate-name=db",
        "--efi-arch=aa64",
    ] {
        let out = run(Command::new(bootchain_bin())
            .current_dir(p)
            .args(base)
            .arg(refused)
            .arg("--output=refused.efi"));
        assert!(!out.status.success(), "{refused} accepted");
        let name = refused.split('=').next().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(name), "{refused}: {err}");
        assert!(!p.join("refused.efi").exists());
    }
}
