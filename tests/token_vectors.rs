//! Tokens written by systemd-cryptenroll 252 (test-vectors/tokens/, made by
//! scripts/regen-token-vectors with PCR 7 = extend(0, SHA-256("db")) and PCR 11 =
//! extend(0, SHA-256("uki"))) and by systemd-cryptenroll 257 (Debian 13, run by
//! scripts/trixie-tools against a fresh swtpm, PCR 7 = 0): parsed losslessly, and each
//! `tpm2-policy-hash` recomputed offline, which is also the `authPolicy` of the sealed object
//! inside `tpm2-blob`.

mod common;

use bootchain::eventlog::extend;
use bootchain::hash::{Digest, HashAlg};
use bootchain::policy::{self, PcrBinding, PcrIndex, PcrSelection};
use bootchain::token::{unmarshal_blob, SystemdTpm2Token};
use bootchain::tpm::ParentKind;
use common::repo_root;

fn vector(name: &str) -> (serde_json::Value, SystemdTpm2Token) {
    let p = repo_root().join("test-vectors/tokens").join(name);
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    let t = SystemdTpm2Token::from_json(&v).unwrap();
    // Lossless: serializing gives back the same JSON.
    assert_eq!(serde_json::to_value(&t).unwrap(), v, "{name}");
    (v, t)
}

fn pcr(input: &[u8]) -> Digest {
    extend(
        &Digest::zero(HashAlg::Sha256),
        &HashAlg::Sha256.digest(input),
    )
}

fn binding(pcrs: &[(u32, Digest)]) -> PcrBinding {
    PcrBinding {
        selection: PcrSelection::new(
            HashAlg::Sha256,
            pcrs.iter().map(|(i, _)| PcrIndex::new(*i).unwrap()),
        ),
        values: pcrs.iter().map(|(_, v)| v.clone()).collect(),
    }
}

/// The TPMT_PUBLIC inside `tpm2-blob`: keyed-hash, SHA-256 name, fixedTPM|fixedParent only,
/// authPolicy = the token's policy hash.
fn check_blob(t: &SystemdTpm2Token) {
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(&t.blob)
        .unwrap();
    let (_, public, _) = unmarshal_blob(&raw).unwrap();
    assert_eq!(&public[0..2], &[0x00, 0x08], "TPM_ALG_KEYEDHASH");
    assert_eq!(&public[2..4], &[0x00, 0x0b], "nameAlg SHA-256");
    assert_eq!(&public[4..8], &[0, 0, 0, 0x12], "fixedTPM|fixedParent only");
    assert_eq!(&public[8..10], &[0x00, 0x20]);
    assert_eq!(hex::encode(&public[10..42]), t.policy_hash);
}

#[test]
fn literal_pcrs_7_11() {
    let (_, t) = vector("systemd-252-pcrs-7-11.json");
    assert_eq!(t.pcrs, vec![7, 11]);
    assert_eq!(t.parent().unwrap(), (ParentKind::LegacyEcc, None));
    let d = policy::sealing_policy(
        None,
        Some(&binding(&[(7, pcr(b"db")), (11, pcr(b"uki"))])),
        false,
    )
    .unwrap();
    assert_eq!(d.to_hex(), t.policy_hash);
    check_blob(&t);
}

#[test]
fn signed_policy_pcr_11() {
    let (v, t) = vector("systemd-252-pubkey-11.json");
    assert!(t.pcrs.is_empty());
    assert_eq!(t.pubkey_pcrs, Some(vec![11]));
    // 252 spells these with underscores.
    assert!(v.get("tpm2_pubkey").is_some() && v.get("tpm2_pubkey_pcrs").is_some());
    let key = t.public_key().unwrap().unwrap();
    let name = policy::object_name(&policy::rsa_public_area(&key).unwrap());
    let d = policy::sealing_policy(Some(&name), Some(&binding(&[])), false).unwrap();
    assert_eq!(d.to_hex(), t.policy_hash);
    check_blob(&t);
}

#[test]
fn pin_with_literal_pcr_7() {
    let (_, t) = vector("systemd-252-pin-7.json");
    assert!(t.pin);
    assert!(t.salt.is_none(), "systemd 252 does not salt the PIN");
    let d = policy::sealing_policy(None, Some(&binding(&[(7, pcr(b"db"))])), true).unwrap();
    assert_eq!(d.to_hex(), t.policy_hash);
    check_blob(&t);
}

/// systemd 257 (`--tpm2-pcrs=7 --tpm2-with-pin=yes`): the PIN is salted (`tpm2_salt`, 32
/// bytes) and the object is sealed under the persistent SRK (`tpm2_srk`: its handle and
/// TPM2B_PUBLIC), whose Name the parent check compares. The salt does not enter the policy:
/// PolicyPCR then PolicyAuthValue, as in 252. `tests/luks.rs` unseals such a token live.
#[test]
fn salted_pin_under_the_srk_systemd_257() {
    use base64::Engine as _;
    let (v, t) = vector("systemd-257-salted-pin-7.json");
    assert!(t.pin);
    let salt = base64::engine::general_purpose::STANDARD
        .decode(t.salt.as_deref().expect("systemd 257 salts the PIN"))
        .unwrap();
    assert_eq!(salt.len(), 32);
    assert!(v.get("tpm2_srk").is_some());
    let (kind, name) = t.parent().unwrap();
    assert_eq!(kind, ParentKind::Srk);
    assert_eq!(name.map(|n| n.len()), Some(34), "nameAlg ‖ SHA-256");
    let zero = Digest::zero(HashAlg::Sha256);
    let d = policy::sealing_policy(None, Some(&binding(&[(7, zero)])), true).unwrap();
    assert_eq!(d.to_hex(), t.policy_hash);
    check_blob(&t);
}

#[test]
fn malformed_tokens_are_typed_errors() {
    let (v, _) = vector("systemd-252-pcrs-7-11.json");
    let mut cases: Vec<serde_json::Value> = Vec::new();
    for key in [
        "type",
        "tpm2-blob",
        "tpm2-pcrs",
        "tpm2-policy-hash",
        "keyslots",
    ] {
        let mut c = v.clone();
        c.as_object_mut().unwrap().remove(key);
        cases.push(c);
    }
    let mut c = v.clone();
    c["type"] = "clevis".into();
    cases.push(c);
    let mut c = v.clone();
    c["tpm2-pcrs"] = serde_json::json!(["seven"]);
    cases.push(c);
    for c in &cases {
        assert!(SystemdTpm2Token::from_json(c).is_err(), "{c}");
    }
    // Fields that parse but are wrong inside.
    for (key, val) in [
        ("tpm2-pcr-bank", "md5"),
        ("tpm2-primary-alg", "dsa"),
        ("tpm2-blob", "%%%"),
    ] {
        let mut c = v.clone();
        c[key] = val.into();
        let t = SystemdTpm2Token::from_json(&c).unwrap();
        let r = match key {
            "tpm2-pcr-bank" => t.bank().map(|_| ()),
            "tpm2-primary-alg" => t.parent().map(|_| ()),
            _ => {
                use base64::Engine as _;
                base64::engine::general_purpose::STANDARD
                    .decode(&t.blob)
                    .map(|_| ())
                    .map_err(|source| {
                        bootchain::token::TokenError::Malformed(
                            bootchain::token::MalformedToken::Base64 {
                                field: "tpm2-blob",
                                source,
                            },
                        )
                    })
            }
        };
        assert!(r.is_err(), "{key}={val}");
    }
}

/// An ESYS_TR serialization of an NV index as systemd 257 writes `tpm2_pcrlock_nv`, enough of
/// it for bootchain (handle, then a TPM2B Name): the Name here is a placeholder.
fn base64_esys_tr(index: u32) -> String {
    use base64::Engine as _;
    let mut b = index.to_be_bytes().to_vec();
    b.extend_from_slice(&34u16.to_be_bytes());
    b.extend_from_slice(&[0x00, 0x0b]);
    b.extend_from_slice(&[0x5a; 32]);
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// systemd 257's array-valued members: a single shard reads as the plain member (and
/// unlocks as before); several shards are refused by name, not as malformed JSON or a policy
/// mismatch; pcrlock tokens of systemd 255–257 are read, and what they lack is named.
#[test]
fn sharded_and_pcrlock_tokens_of_257() {
    use bootchain::token::{TokenError, UnsupportedToken};
    let (v, t) = vector("systemd-257-salted-pin-7.json");
    let mut one = v.clone();
    one["tpm2-blob"] = serde_json::json!([v["tpm2-blob"].clone()]);
    one["tpm2-policy-hash"] = serde_json::json!([v["tpm2-policy-hash"].clone()]);
    let parsed = SystemdTpm2Token::from_json(&one).unwrap();
    assert_eq!(parsed.blob, t.blob);
    assert_eq!(parsed.policy_hash, t.policy_hash);

    let mut two = v.clone();
    two["tpm2-blob"] = serde_json::json!([v["tpm2-blob"].clone(), v["tpm2-blob"].clone()]);
    assert!(matches!(
        SystemdTpm2Token::from_json(&two),
        Err(TokenError::Unsupported(UnsupportedToken::Sharded {
            member: "tpm2-blob",
            shards: 2
        }))
    ));

    // A pcrlock token of systemd 255/256 names no index: it parses, and unsealing without
    // pcrlock.json says that file is needed, before any TPM command (prepare).
    let mut lock = v.clone();
    lock["tpm2_pcrlock"] = serde_json::json!(true);
    let old = SystemdTpm2Token::from_json(&lock).unwrap();
    assert!(old.is_pcrlock());
    assert_eq!(old.pcrlock_nv().unwrap(), None);
    let e = bootchain::token::prepare(&old, &Default::default()).unwrap_err();
    assert!(matches!(
        e,
        TokenError::Unsupported(UnsupportedToken::PcrlockWithoutPolicyFile)
    ));
    // With a pcrlock.json for another index than the token's, the mismatch is named.
    let file = bootchain::pcrlock::PcrlockPolicy::from_json(
        &std::fs::read(repo_root().join("test-vectors/pcrlock/policy-pcr12-pcr13.json")).unwrap(),
    )
    .unwrap();
    let mut other = lock.clone();
    other["tpm2_pcrlock_nv"] = serde_json::json!(base64_esys_tr(0x0180_0c01));
    let other = SystemdTpm2Token::from_json(&other).unwrap();
    let opts = bootchain::seal::UnsealOptions {
        pcrlock: Some(&file),
        ..Default::default()
    };
    let e = bootchain::token::prepare(&other, &opts).unwrap_err();
    assert!(
        matches!(
            e,
            TokenError::Unsupported(UnsupportedToken::PcrlockIndex {
                file: 0x0180_0c00,
                token: 0x0180_0c01
            })
        ),
        "{e:?}"
    );
    // Combined with a signed policy: refused by name.
    let mut signed = lock.clone();
    signed["tpm2_pubkey"] = serde_json::json!("");
    let e = SystemdTpm2Token::from_json(&signed).unwrap_err();
    assert!(matches!(
        e,
        TokenError::Unsupported(UnsupportedToken::Pcrlock)
    ));
    assert!(bootchain::error::Chain(&e).to_string().contains("pcrlock"));
    // systemd 257 names the index in tpm2_pcrlock_nv (an ESYS_TR serialization): read, and a
    // truncated one is refused as such.
    lock["tpm2_pcrlock_nv"] = serde_json::json!("AYAMAAAi");
    let t = SystemdTpm2Token::from_json(&lock).unwrap();
    let e = bootchain::error::Chain(&t.pcrlock_nv().unwrap_err()).to_string();
    assert!(
        e.contains("tpm2_pcrlock_nv is not a serialized ESYS_TR"),
        "{e}"
    );
}
