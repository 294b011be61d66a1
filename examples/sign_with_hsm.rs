//! Sign a PE image (a UKI, a boot loader) with a key file or a key in a PKCS#11 token, through
//! the one `Signer` interface Authenticode and `.pcrsig` signing share.
//!
//! ```sh
//! cargo run --example sign_with_hsm -- uki.efi \
//!     'pkcs11:token=build;object=db?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=/run/pin' \
//!     uki.signed.efi [db.crt]
//! ```
//!
//! Without a certificate argument, the token's certificate with the key's CKA_ID is used.

use std::error::Error;

use bootchain::{sign, signer};

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [image, key, output, rest @ ..] = args.as_slice() else {
        return Err("usage: sign_with_hsm IMAGE KEY|pkcs11:URI OUTPUT [CERT|pkcs11:URI]".into());
    };
    // A key file or a pkcs11: URI: the PIN comes from the URI's pin-source, or from
    // BOOTCHAIN_PKCS11_PIN.
    let key = signer::open(key)?;
    let cert = match rest.first() {
        Some(c) => signer::open_certificate(c)?,
        None => key
            .certificate()?
            .ok_or("no certificate given and none in the token")?,
    };
    println!(
        "signing with {:?} for {}",
        key.scheme(),
        cert.tbs_certificate.subject
    );
    let digest = sign::sign_file(
        image.as_ref(),
        output.as_ref(),
        &*key,
        &cert,
        &Default::default(),
    )?;
    // Check what was written, as firmware will.
    let report = sign::verify_file(output.as_ref(), None, Some(&cert))?;
    if !report.passed(true) {
        return Err("the signed image does not verify".into());
    }
    println!("signed {output} (Authenticode sha256 {digest})");
    Ok(())
}
