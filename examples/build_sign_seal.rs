//! The build side of an encrypted confidential VM through the library: build a UKI from the
//! systemd stub and a kernel, sign it for Secure Boot, check the signature, predict its
//! PCR 11, seal a root key to that prediction on a TPM — then "boot" it (extend PCR 11 with
//! the predicted events, as systemd-stub would) and unseal.
//!
//! ```text
//! cargo run --example build_sign_seal -- STUB KERNEL DB.key DB.crt TCTI OUTDIR
//! # e.g. STUB=/usr/lib/systemd/boot/efi/linuxx64.efi.stub, TCTI=swtpm:host=127.0.0.1,port=2321
//! ```
//! Only for a TPM you may extend PCR 11 on (a swtpm): a real one would then refuse the boot's
//! own unseal.

use std::path::PathBuf;

use bootchain::hash::HashAlg;
use bootchain::measure::Phase;
use bootchain::seal::plan::SealPlan;
use bootchain::tpm::{ParentChoice, Tpm};
use bootchain::uki::{SectionContent, UkiBuilder};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [stub, kernel, key, cert, tcti, out] = args.as_slice() else {
        eprintln!("usage: build_sign_seal STUB KERNEL DB.key DB.crt TCTI OUTDIR");
        std::process::exit(2);
    };
    let out = PathBuf::from(out);
    let uki = out.join("example.efi");

    // 1. Build and sign (reproducibly: SOURCE_DATE_EPOCH or 0), and have the build report
    //    PCR 11 right after the stub (no phase word), from the digests it computes while
    //    writing: no second pass over the image.
    let cert = bootchain::keys::load_certificate(cert.as_ref())?;
    let after_stub = Phase::after_stub();
    let report = UkiBuilder::new()
        .stub(stub)
        .linux(kernel)
        .cmdline(SectionContent::Bytes(b"console=ttyS0 panic=30".to_vec()))
        .os_release(SectionContent::Bytes(
            b"ID=example\nVERSION_ID=1\n".to_vec(),
        ))
        .timestamp(bootchain::uki::source_date_epoch()?.unwrap_or(0))
        .measure(vec![HashAlg::Sha256], vec![after_stub.clone()])
        .sign_with(
            bootchain::keys::SigningKey::from_file(key.as_ref())?,
            cert.clone(),
            Default::default(),
        )
        .build(&uki)?;
    let verified = bootchain::sign::verify_file(&uki, None, Some(&cert))?;
    println!(
        "built {} ({} bytes, Authenticode {}), signature trusted: {}",
        uki.display(),
        report.size,
        report.authenticode_sha256,
        verified.passed(true)
    );

    // 2. The predicted PCR 11, before the UKI ever boots.
    let pcr11 = report.pcr11.ok_or("the build was asked to measure")?;
    let predicted = pcr11
        .value(HashAlg::Sha256, &after_stub)
        .ok_or("no sha256 value")?
        .clone();
    println!("predicted PCR 11: {predicted}");

    // 3. Seal a root key to that prediction, and write the envelope (mode 0600).
    let mut plan = SealPlan::new(HashAlg::Sha256).literal_pcrs(&[11])?;
    plan.values.insert((HashAlg::Sha256, 11), predicted);
    let mut tpm = Tpm::open(tcti)?;
    let root_key = b"example root volume key";
    let envelope = bootchain::seal::seal(&mut tpm, &plan.request(ParentChoice::Auto)?, root_key)?;
    bootchain::seal::write_envelope(&envelope, &out.join("root.envelope"), None)?;

    // 4. "Boot": the stub's measurements into PCR 11, then unseal.
    for e in &pcr11.events {
        tpm.extend(11, &[e.digests[&HashAlg::Sha256].clone()])?;
    }
    let secret = bootchain::seal::unseal(&mut tpm, &envelope, &Default::default())?;
    assert_eq!(&secret[..], root_key);
    println!("unsealed after the predicted boot: ok");
    Ok(())
}
