//! Enroll a TPM2 keyslot into a LUKS2 volume, as `systemd-cryptenroll --tpm2-device
//! --tpm2-pcrs=7` does (a `systemd-tpm2` token systemd-cryptsetup opens at boot), with PCR 7
//! taken from a prediction file when given; then unlock it once to show the keyslot opens.
//!
//! ```text
//! cargo run --example enroll_luks -- DEVICE UNLOCK-KEY-FILE TCTI [PCRS.json]
//! # PCRS.json: `bootchain pcr predict --json` output (its "values"), or {"sha256": {"7": "hex"}}
//! ```
//! Without PCRS.json PCR 7 is read from the TPM: fine for a demo, but whoever controls the
//! TPM channel chooses that value — prefer predictions.

use bootchain::hash::HashAlg;
use bootchain::luks::Luks;
use bootchain::seal::plan::SealPlan;
use bootchain::token::{self, EnrollRequest, TokenKind};
use bootchain::tpm::{ParentChoice, ParentKind, Tpm};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (device, key_file, tcti) = match args.as_slice() {
        [d, k, t] | [d, k, t, _] => (d, k, t),
        _ => {
            eprintln!("usage: enroll_luks DEVICE UNLOCK-KEY-FILE TCTI [PCRS.json]");
            std::process::exit(2);
        }
    };
    let mut plan = SealPlan::new(HashAlg::Sha256).literal_pcrs(&[7])?;
    if let Some(p) = args.get(3) {
        plan = plan.values_from_json(p.as_ref())?;
    }
    let mut tpm = Tpm::open(tcti)?;
    let read = plan.fill_from_tpm(&mut tpm)?;
    if !read.is_empty() {
        eprintln!("warning: PCR {read:?} read from the TPM, not predicted");
    }
    let luks = Luks::new(device.as_ref());
    let req = EnrollRequest {
        // systemd-cryptsetup's own primary key template, so systemd can open the token.
        seal: plan.request(ParentChoice::Kind(ParentKind::LegacyEcc))?,
        unsalted_pin: false,
        kind: TokenKind::Systemd,
    };
    let (id, slot) = token::enroll_luks(&mut tpm, &luks, key_file.as_ref(), &req)?;
    println!("token {id} for keyslot {slot}");
    let unlocked = token::unlock_luks(&mut tpm, &luks, Some(id), &Default::default())?;
    luks.test_passphrase(unlocked.keyslot, unlocked.passphrase.as_bytes())?;
    println!("keyslot {slot} opens with the unsealed passphrase");
    Ok(())
}
