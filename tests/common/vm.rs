//! A real boot as the judge: QEMU + OVMF (optionally Secure Boot enforcing with our own PK,
//! KEK and db) + swtpm. Boots a UKI from a FAT ESP image as `\EFI\BOOT\BOOTX64.EFI` and returns
//! what the booted initrd saw: PCRs of the sha1 and sha256 banks, the TCG event log and
//! /proc/cmdline. Every child process is killed on drop, pass or fail.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use base64::Engine as _;

use super::{repo_root, run_ok};

pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
pub const OVMF_CODE_SECBOOT: &str = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
/// The owner GUID virt-fw-vars records for our PK/KEK/db entries.
pub const OWNER_GUID: &str = "b0075c4a-7e5b-4c48-9b8e-bc0eb0075c4a";

/// A child process that is killed and reaped when dropped.
pub struct Guard {
    pub child: Child,
    pub what: &'static str,
}

impl Guard {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Secure Boot keys for one test run: PK, KEK and db, each a self-signed RSA-2048 cert.
#[derive(Clone, Debug)]
pub struct SbKeys {
    pub dir: PathBuf,
    pub pk: PathBuf,
    pub kek: PathBuf,
    pub db_key: PathBuf,
    pub db: PathBuf,
}

impl SbKeys {
    pub fn generate(dir: &Path) -> SbKeys {
        std::fs::create_dir_all(dir).unwrap();
        let mut paths = vec![];
        for n in ["pk", "kek", "db"] {
            let (k, c) = super::make_key(dir, n, "rsa:2048");
            paths.push((k, c));
        }
        SbKeys {
            dir: dir.to_path_buf(),
            pk: paths[0].1.clone(),
            kek: paths[1].1.clone(),
            db_key: paths[2].0.clone(),
            db: paths[2].1.clone(),
        }
    }
}

fn virt_fw_vars() -> PathBuf {
    if let Ok(p) = std::env::var("BOOTCHAIN_VIRT_FW_VARS") {
        return PathBuf::from(p);
    }
    let venv = repo_root().join(".cache/venv/bin/virt-fw-vars");
    if venv.exists() {
        return venv;
    }
    PathBuf::from("virt-fw-vars")
}

/// A copy of OVMF_VARS with our PK/KEK/db enrolled and Secure Boot enabled.
pub fn enrolled_vars(keys: &SbKeys, out: &Path) {
    run_ok(
        Command::new(virt_fw_vars())
            .arg("-i")
            .arg(OVMF_VARS)
            .arg("-o")
            .arg(out)
            .arg("--set-pk")
            .arg(OWNER_GUID)
            .arg(&keys.pk)
            .arg("--add-kek")
            .arg(OWNER_GUID)
            .arg(&keys.kek)
            .arg("--add-db")
            .arg(OWNER_GUID)
            .arg(&keys.db)
            .arg("--sb"),
    );
}

/// A FAT ESP image holding `uki` as \EFI\BOOT\BOOTX64.EFI, made without loop devices.
pub fn make_esp(uki: &Path, out: &Path) {
    make_esp_with(uki, out, "EFI/BOOT/BOOTX64.EFI", &[]);
}

/// A FAT ESP image holding `uki` at `uki_at` and each (ESP path, file) of `extra`, with the
/// directories they need.
pub fn make_esp_with(uki: &Path, out: &Path, uki_at: &str, extra: &[(&str, &Path)]) {
    let size = std::fs::metadata(uki).unwrap().len()
        + extra
            .iter()
            .map(|(_, f)| std::fs::metadata(f).unwrap().len())
            .sum::<u64>();
    let mib = (size / (1 << 20)) + 40;
    let f = std::fs::File::create(out).unwrap();
    f.set_len(mib << 20).unwrap();
    drop(f);
    run_ok(Command::new("mkfs.vfat").arg("-F").arg("32").arg(out));
    let files: Vec<(&str, &Path)> = std::iter::once((uki_at, uki))
        .chain(extra.iter().copied())
        .collect();
    let mut dirs: Vec<String> = Vec::new();
    for (at, _) in &files {
        let parts: Vec<&str> = at.split('/').collect();
        for i in 1..parts.len() {
            let d = format!("::/{}", parts[..i].join("/"));
            if !dirs.contains(&d) {
                dirs.push(d);
            }
        }
    }
    if !dirs.is_empty() {
        run_ok(Command::new("mmd").arg("-i").arg(out).args(&dirs));
    }
    for (at, f) in files {
        run_ok(
            Command::new("mcopy")
                .arg("-i")
                .arg(out)
                .arg(f)
                .arg(format!("::/{at}")),
        );
    }
}

/// The test initrd's /init: print PCRs, the event log and the command line between markers,
/// then power off.
pub const TEST_INIT: &str = r#"#!/bin/sh
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t securityfs securityfs /sys/kernel/security
echo "BOOTCHAIN-INITRD-REACHED"
echo "BOOTCHAIN-PCRS-BEGIN"
for bank in sha1 sha256; do
  for i in 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15; do
    echo "PCR $bank $i $(cat /sys/class/tpm/tpm0/pcr-$bank/$i)"
  done
done
echo "BOOTCHAIN-PCRS-END"
echo "BOOTCHAIN-LOG-BEGIN"
base64 /sys/kernel/security/tpm0/binary_bios_measurements
echo "BOOTCHAIN-LOG-END"
echo "BOOTCHAIN-CMDLINE-BEGIN"
cat /proc/cmdline
echo "BOOTCHAIN-CMDLINE-END"
poweroff -f
"#;

/// The test initrd (busybox-static + TEST_INIT), built once per test process.
pub fn test_initrd() -> PathBuf {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        let dir = repo_root().join(".cache/vm");
        std::fs::create_dir_all(&dir).unwrap();
        let init = dir.join(format!("init.{}", std::process::id()));
        std::fs::write(&init, TEST_INIT).unwrap();
        let out = dir.join("test-initrd.img");
        let tmp = dir.join(format!("test-initrd.{}.tmp", std::process::id()));
        run_ok(
            Command::new(repo_root().join("scripts/make-initrd"))
                .arg(&tmp)
                .arg(&init),
        );
        std::fs::rename(&tmp, &out).unwrap();
        let _ = std::fs::remove_file(&init);
        out
    })
    .clone()
}

/// The command line the test UKIs carry (quiet, so the kernel does not interleave with our
/// output on the serial console).
pub const TEST_CMDLINE: &str = "console=ttyS0 quiet loglevel=0 panic=-1";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

/// Whether KVM can run this firmware here: a short probe boot of OVMF (no disk) under KVM,
/// judged by whether the firmware's boot manager prints on the serial console.
pub fn accel_for(secure_boot: bool) -> Accel {
    static PLAIN: OnceLock<Accel> = OnceLock::new();
    static SB: OnceLock<Accel> = OnceLock::new();
    let cell = if secure_boot { &SB } else { &PLAIN };
    *cell.get_or_init(|| probe_kvm(secure_boot))
}

fn probe_kvm(secure_boot: bool) -> Accel {
    if std::env::var("BOOTCHAIN_ACCEL").as_deref() == Ok("tcg") {
        return Accel::Tcg;
    }
    if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
        eprintln!("vm: /dev/kvm not usable: using TCG emulation");
        return Accel::Tcg;
    }
    let dir = tempfile::tempdir().unwrap();
    let vars = dir.path().join("vars.fd");
    std::fs::copy(OVMF_VARS, &vars).unwrap();
    let serial = dir.path().join("serial.log");
    let stderr = dir.path().join("stderr.log");
    let mut cmd = qemu_base(secure_boot, Accel::Kvm, &vars, &serial);
    cmd.stderr(std::fs::File::create(&stderr).unwrap());
    let Ok(child) = cmd.spawn() else {
        return Accel::Tcg;
    };
    let mut g = Guard {
        child,
        what: "qemu (kvm probe)",
    };
    let start = Instant::now();
    let verdict = loop {
        let s = std::fs::read(&serial).unwrap_or_default();
        if String::from_utf8_lossy(&s).contains("BdsDxe") {
            break Accel::Kvm;
        }
        let e = std::fs::read_to_string(&stderr).unwrap_or_default();
        if e.contains("KVM internal error") || e.contains("not supported") {
            break Accel::Tcg;
        }
        if let Ok(Some(_)) = g.child.try_wait() {
            break Accel::Tcg;
        }
        if start.elapsed() > Duration::from_secs(15) {
            break Accel::Tcg;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    drop(g);
    let e = std::fs::read_to_string(&stderr).unwrap_or_default();
    eprintln!(
        "vm: KVM probe for {} firmware: {verdict:?}{}",
        if secure_boot { "Secure Boot" } else { "plain" },
        e.lines()
            .find(|l| l.contains("KVM internal error") || l.contains("not supported"))
            .map(|l| format!(" ({l})"))
            .unwrap_or_default()
    );
    verdict
}

fn qemu_base(secure_boot: bool, accel: Accel, vars: &Path, serial: &Path) -> Command {
    let mut c = Command::new("qemu-system-x86_64");
    let machine = if secure_boot { "q35,smm=on" } else { "q35" };
    c.args(["-machine", machine, "-m", "512", "-smp", "1"])
        .args([
            "-display",
            "none",
            "-monitor",
            "none",
            "-no-reboot",
            "-nodefaults",
        ])
        .arg("-accel")
        .arg(match accel {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        });
    if secure_boot {
        c.args([
            "-global",
            "driver=cfi.pflash01,property=secure,value=on",
            "-global",
            "ICH9-LPC.disable_s3=1",
        ]);
    }
    let code = if secure_boot {
        OVMF_CODE_SECBOOT
    } else {
        OVMF_CODE
    };
    c.arg("-drive")
        .arg(format!(
            "if=pflash,format=raw,unit=0,readonly=on,file={code}"
        ))
        .arg("-drive")
        .arg(format!(
            "if=pflash,format=raw,unit=1,file={}",
            vars.display()
        ))
        .arg("-serial")
        .arg(format!("file:{}", serial.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    c
}

/// What to boot.
pub struct BootSpec<'a> {
    pub uki: &'a Path,
    /// Secure Boot enforcing with these keys enrolled; `None` boots the non-SB firmware.
    pub secure_boot: Option<&'a SbKeys>,
    pub timeout: Duration,
    /// Start the vTPM from a copy of this swtpm state directory (e.g. one a secret was
    /// sealed under); `None` manufactures a fresh TPM.
    pub tpm_state: Option<&'a Path>,
}

/// What the boot showed.
#[derive(Debug, Default)]
pub struct BootResult {
    pub accel: Option<Accel>,
    /// The initrd's /init ran.
    pub reached_initrd: bool,
    /// The firmware refused the image ("Access Denied" / security violation).
    pub refused: bool,
    pub timed_out: bool,
    /// (bank, index) -> value.
    pub pcrs: BTreeMap<(String, u32), Vec<u8>>,
    pub event_log: Vec<u8>,
    pub cmdline: String,
    pub serial: String,
    pub duration: Duration,
    /// PIDs of every child we started (for leak checks).
    pub child_pids: Vec<u32>,
    /// TPM commands the guest sent (with [`BootExtras::count_tpm_commands`]).
    pub tpm_commands: Option<usize>,
}

impl BootResult {
    pub fn pcr(&self, bank: &str, index: u32) -> &[u8] {
        self.pcrs
            .get(&(bank.to_string(), index))
            .unwrap_or_else(|| panic!("PCR {bank}:{index} not reported"))
    }
}

/// Whether qemu can start at all (the one reason VM tests may skip).
pub fn qemu_available() -> Result<(), String> {
    let out = Command::new("qemu-system-x86_64").arg("--version").output();
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) => return Err(String::from_utf8_lossy(&o.stderr).into_owned()),
        Err(e) => return Err(format!("qemu-system-x86_64: {e}")),
    }
    for f in [OVMF_CODE, OVMF_CODE_SECBOOT, OVMF_VARS] {
        if !Path::new(f).exists() {
            return Err(format!("{f} missing (package ovmf)"));
        }
    }
    Ok(())
}

/// Skip (loudly) only if qemu cannot start at all; returns false when skipped. Under
/// `./scripts/test` (which installs QEMU and OVMF, and sets `BOOTCHAIN_REQUIRE_VM=1`) a missing
/// QEMU is a failure, never a skip.
pub fn require_qemu(test: &str) -> bool {
    match qemu_available() {
        Ok(()) => true,
        Err(why) if std::env::var_os("BOOTCHAIN_REQUIRE_VM").is_some() => {
            panic!("{test}: qemu cannot start here: {why} (BOOTCHAIN_REQUIRE_VM is set)")
        }
        Err(why) => {
            // Printed on stdout too: the test harness shows it even for a passing test.
            println!("SKIPPED {test}: qemu cannot start here: {why}");
            eprintln!("SKIPPED {test}: qemu cannot start here: {why}");
            false
        }
    }
}

fn wait_for_socket(p: &Path, g: &mut Guard) {
    let start = Instant::now();
    while !p.exists() {
        if let Ok(Some(st)) = g.child.try_wait() {
            panic!("swtpm exited early: {st}");
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "swtpm socket {p:?} did not appear"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// More for a boot: data disks, console input, when it is over, and a vTPM whose state
/// carries over between boots.
#[derive(Default)]
pub struct BootExtras<'a> {
    /// Raw images attached as further virtio disks (/dev/vdb, ...), written in place.
    pub disks: Vec<&'a Path>,
    /// (text seen on the console, text typed on it) pairs, each typed once, in order.
    pub serial_input: Vec<(&'a str, &'a str)>,
    /// The boot is over when the console shows this (else when QEMU exits or times out).
    pub end_marker: Option<&'a str>,
    /// Boot with the swtpm state in `tpm_state` itself (not a copy), so its changes (DA
    /// counters, persistent objects) carry over to the next boot.
    pub persist_tpm: bool,
    /// Count the TPM commands of the whole boot (swtpm logs each one at level 20).
    pub count_tpm_commands: bool,
    /// Where the UKI goes on the ESP (default `EFI/BOOT/BOOTX64.EFI`, booted by the
    /// firmware's removable-media path).
    pub uki_at: Option<&'a str>,
    /// More files on the ESP: (path, file).
    pub esp_files: Vec<(&'a str, &'a Path)>,
}

/// Boot a UKI and collect what the initrd printed.
pub fn boot(spec: &BootSpec<'_>) -> BootResult {
    boot_with(spec, &BootExtras::default())
}

/// Boot with [`BootExtras`].
pub fn boot_with(spec: &BootSpec<'_>, extras: &BootExtras<'_>) -> BootResult {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let esp = dir.path().join("esp.img");
    make_esp_with(
        spec.uki,
        &esp,
        extras.uki_at.unwrap_or("EFI/BOOT/BOOTX64.EFI"),
        &extras.esp_files,
    );
    let vars = dir.path().join("vars.fd");
    match spec.secure_boot {
        Some(keys) => enrolled_vars(keys, &vars),
        None => {
            std::fs::copy(OVMF_VARS, &vars).unwrap();
        }
    }
    // swtpm with its state directory as an absolute path; QEMU drives its control channel.
    let tpm_dir = dir.path().join("tpm");
    std::fs::create_dir_all(&tpm_dir).unwrap();
    if let Some(state) = spec.tpm_state {
        for e in std::fs::read_dir(state).unwrap() {
            let e = e.unwrap();
            let name = e.file_name();
            if name.to_string_lossy().ends_with(".permall") {
                std::fs::copy(e.path(), tpm_dir.join(name)).unwrap();
            }
        }
    }
    let sock = tpm_dir.join("swtpm.sock");
    let swtpm = Command::new("swtpm")
        .args(["socket", "--tpm2"])
        .arg("--tpmstate")
        .arg(format!("dir={}", tpm_dir.canonicalize().unwrap().display()))
        .arg("--ctrl")
        .arg(format!("type=unixio,path={}", sock.display()))
        .arg("--log")
        .arg(format!(
            "file={},level={}",
            tpm_dir.join("swtpm.log").display(),
            if extras.count_tpm_commands { 20 } else { 1 }
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start swtpm (package swtpm)");
    let mut swtpm = Guard {
        child: swtpm,
        what: "swtpm",
    };
    wait_for_socket(&sock, &mut swtpm);

    let accel = accel_for(spec.secure_boot.is_some());
    let serial = dir.path().join("serial.log");
    let stderr = dir.path().join("qemu.stderr");
    let console_sock = dir.path().join("console.sock");
    let mut cmd = qemu_base(spec.secure_boot.is_some(), accel, &vars, &serial);
    if !extras.serial_input.is_empty() {
        // The console as a socket we can type into; its output still goes to the log file.
        let args: Vec<std::ffi::OsString> = cmd.get_args().map(|a| a.to_os_string()).collect();
        let mut c = Command::new(cmd.get_program());
        let mut it = args.iter().peekable();
        while let Some(a) = it.next() {
            if a == "-serial" {
                it.next();
                c.arg("-serial").arg("chardev:console0");
            } else {
                c.arg(a);
            }
        }
        c.arg("-chardev").arg(format!(
            "socket,id=console0,path={},server=on,wait=off,logfile={}",
            console_sock.display(),
            serial.display()
        ));
        c.stdin(Stdio::null()).stdout(Stdio::null());
        cmd = c;
    }
    for d in &extras.disks {
        cmd.arg("-drive")
            .arg(format!("file={},format=raw,if=virtio", d.display()));
    }
    cmd.arg("-drive")
        .arg(format!("file={},format=raw,if=virtio", esp.display()))
        .arg("-chardev")
        .arg(format!("socket,id=chrtpm,path={}", sock.display()))
        .args(["-tpmdev", "emulator,id=tpm0,chardev=chrtpm"])
        .args(["-device", "tpm-tis,tpmdev=tpm0"])
        .stderr(std::fs::File::create(&stderr).unwrap());
    let qemu = cmd.spawn().expect("start qemu-system-x86_64");
    let mut qemu = Guard {
        child: qemu,
        what: "qemu",
    };
    let mut result = BootResult {
        accel: Some(accel),
        child_pids: vec![swtpm.pid(), qemu.pid()],
        ..Default::default()
    };
    let mut typed = 0;
    let mut console: Option<std::os::unix::net::UnixStream> = None;
    let mut seen_from = 0;
    loop {
        let text =
            String::from_utf8_lossy(&std::fs::read(&serial).unwrap_or_default()).into_owned();
        let exited = matches!(qemu.child.try_wait(), Ok(Some(_)));
        if text.contains("Access Denied") || text.contains("Security Violation") {
            result.refused = true;
        }
        if let Some((when, what)) = extras.serial_input.get(typed) {
            if let Some(pos) = text.get(seen_from..).and_then(|t| t.find(when)) {
                if console.is_none() {
                    let s = std::os::unix::net::UnixStream::connect(&console_sock)
                        .expect("connect to the guest console");
                    // Drain what QEMU sends us (the log file has it) so it never blocks.
                    let mut r = s.try_clone().unwrap();
                    std::thread::spawn(move || {
                        let mut sink = [0u8; 4096];
                        while matches!(std::io::Read::read(&mut r, &mut sink), Ok(n) if n > 0) {}
                    });
                    console = Some(s);
                }
                std::thread::sleep(Duration::from_millis(300));
                if let Some(c) = console.as_mut() {
                    use std::io::Write as _;
                    let _ = c.write_all(what.as_bytes());
                }
                seen_from += pos + when.len();
                typed += 1;
            }
        }
        let ended = extras.end_marker.is_some_and(|m| text.contains(m));
        if exited || result.refused || ended || text.contains("BOOTCHAIN-CMDLINE-END") {
            // Give the guest a moment to power off by itself after printing.
            if !exited && (ended || text.contains("BOOTCHAIN-CMDLINE-END")) {
                let t = Instant::now();
                while t.elapsed() < Duration::from_secs(5)
                    && !matches!(qemu.child.try_wait(), Ok(Some(_)))
                {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            result.serial = text;
            break;
        }
        if started.elapsed() > spec.timeout {
            result.timed_out = true;
            result.serial = text;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(qemu);
    drop(swtpm);
    drop(console);
    if extras.count_tpm_commands {
        let log = std::fs::read_to_string(tpm_dir.join("swtpm.log")).unwrap_or_default();
        result.tpm_commands = Some(log.matches("SWTPM_IO_Read").count());
    }
    if extras.persist_tpm {
        if let Some(state) = spec.tpm_state {
            for e in std::fs::read_dir(&tpm_dir).unwrap() {
                let e = e.unwrap();
                if e.file_name().to_string_lossy().ends_with(".permall") {
                    std::fs::copy(e.path(), state.join(e.file_name())).unwrap();
                }
            }
        }
    }
    parse_serial(&mut result);
    result.duration = started.elapsed();
    eprintln!(
        "vm: booted {} ({}, {:?}) in {:.1}s: initrd={} refused={} timed_out={}",
        spec.uki.display(),
        if spec.secure_boot.is_some() {
            "Secure Boot"
        } else {
            "no Secure Boot"
        },
        accel,
        result.duration.as_secs_f64(),
        result.reached_initrd,
        result.refused,
        result.timed_out
    );
    let ended = extras.end_marker.is_some_and(|m| result.serial.contains(m));
    if !result.reached_initrd && !result.refused && !ended {
        let e = std::fs::read_to_string(&stderr).unwrap_or_default();
        eprintln!(
            "vm: qemu stderr: {e}\nvm: serial tail: {}",
            tail(&result.serial, 2000)
        );
    }
    result
}

fn tail(s: &str, n: usize) -> &str {
    let mut i = s.len().saturating_sub(n);
    while !s.is_char_boundary(i) {
        i += 1;
    }
    &s[i..]
}

fn between<'a>(text: &'a str, begin: &str, end: &str) -> Option<Vec<&'a str>> {
    let b = text.find(begin)? + begin.len();
    let e = b + text[b..].find(end)?;
    Some(
        text[b..e]
            .split(['\r', '\n'])
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect(),
    )
}

fn parse_serial(r: &mut BootResult) {
    r.reached_initrd = r.serial.contains("BOOTCHAIN-INITRD-REACHED");
    if let Some(lines) = between(&r.serial, "BOOTCHAIN-PCRS-BEGIN", "BOOTCHAIN-PCRS-END") {
        for l in lines {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() == 4 && f[0] == "PCR" {
                if let (Ok(i), Ok(v)) = (f[2].parse::<u32>(), hex::decode(f[3])) {
                    r.pcrs.insert((f[1].to_string(), i), v);
                }
            }
        }
    }
    if let Some(lines) = between(&r.serial, "BOOTCHAIN-LOG-BEGIN", "BOOTCHAIN-LOG-END") {
        let b64: String = lines.concat();
        r.event_log = base64::engine::general_purpose::STANDARD
            .decode(b64.as_bytes())
            .unwrap_or_default();
    }
    if let Some(lines) = between(
        &r.serial,
        "BOOTCHAIN-CMDLINE-BEGIN",
        "BOOTCHAIN-CMDLINE-END",
    ) {
        r.cmdline = lines.join(" ");
    }
}

/// True if a process with this PID still exists (and is not a zombie of ours).
pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

/// The dbx that [`enrolled_vars`] leaves in the store (virt-fw-vars writes a placeholder entry
/// with `--sb`), as an EFI_SIGNATURE_LIST file: what a PCR 7 prediction for these keys needs.
pub fn enrolled_dbx(keys: &SbKeys, out: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let vars = dir.path().join("vars.fd");
    enrolled_vars(keys, &vars);
    let json = dir.path().join("vars.json");
    run_ok(
        Command::new(virt_fw_vars())
            .arg("-i")
            .arg(&vars)
            .arg("--output-json")
            .arg(&json),
    );
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let data = v["variables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "dbx")
        .map(|x| hex::decode(x["data"].as_str().unwrap()).unwrap())
        .unwrap_or_default();
    std::fs::write(out, data).unwrap();
}
