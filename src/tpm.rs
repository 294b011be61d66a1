//! The only module that talks to a TPM (through tss-esapi 7.7 and tpm2-tss 3.x).
//!
//! TCTI strings as tpm2-tss spells them: `device:/dev/tpmrm0` (the default),
//! `swtpm:host=127.0.0.1,port=2321`. tss-esapi 7.x silently ignores `path=` for swtpm, so use
//! host/port (see ../shared/spec/tpm-swtpm-notes.md).

use std::str::FromStr;

use tss_esapi::abstraction::pcr as tss_pcr;
use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use tss_esapi::structures::{DigestValues, PcrSelectionListBuilder, PcrSlot};
use tss_esapi::{Context, TctiNameConf};

use crate::eventlog::PcrValues;
use crate::hash::{Digest, HashAlg};

/// The TCTI used when none is given.
pub const DEFAULT_TCTI: &str = "device:/dev/tpmrm0";

/// Errors talking to the TPM.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TpmError {
    /// The TCTI string is not valid.
    #[error("invalid TCTI {tcti:?}: {reason}")]
    Tcti {
        /// The string.
        tcti: String,
        /// Why.
        reason: String,
    },
    /// The TPM could not be reached.
    #[error("cannot open TPM via {tcti}: {reason} (is the TPM present and the TCTI right?)")]
    Open {
        /// The TCTI.
        tcti: String,
        /// Why.
        reason: String,
    },
    /// A TPM command failed; `code` is the response code, `name` its meaning.
    #[error("TPM command {command} failed: {name} (response code {code:#x})")]
    Command {
        /// The command.
        command: &'static str,
        /// Response code.
        code: u32,
        /// Decoded meaning.
        name: String,
    },
    /// A value from the TPM was not what we expected.
    #[error("unexpected TPM data: {0}")]
    Data(String),
}

fn cmd_err(command: &'static str) -> impl FnOnce(tss_esapi::Error) -> TpmError {
    move |e| {
        use tss_esapi::constants::response_code::Tss2ResponseCode as R;
        let code = match e {
            tss_esapi::Error::Tss2Error(R::FormatZero(rc)) => rc.0,
            tss_esapi::Error::Tss2Error(R::FormatOne(rc)) => rc.0,
            _ => 0,
        };
        TpmError::Command {
            command,
            code,
            name: e.to_string(),
        }
    }
}

fn hashing(alg: HashAlg) -> HashingAlgorithm {
    match alg {
        HashAlg::Sha1 => HashingAlgorithm::Sha1,
        HashAlg::Sha256 => HashingAlgorithm::Sha256,
        HashAlg::Sha384 => HashingAlgorithm::Sha384,
        HashAlg::Sha512 => HashingAlgorithm::Sha512,
    }
}

fn slot(pcr: u32) -> Result<PcrSlot, TpmError> {
    if pcr > 23 {
        return Err(TpmError::Data(format!("PCR {pcr} out of range")));
    }
    PcrSlot::try_from(1u32 << pcr).map_err(|e| TpmError::Data(e.to_string()))
}

/// The PCR slots and TPML_PCR_SELECTION for `pcrs` of one bank.
fn selection_list(
    bank: HashAlg,
    pcrs: &[u32],
) -> Result<(Vec<PcrSlot>, tss_esapi::structures::PcrSelectionList), TpmError> {
    let slots = pcrs
        .iter()
        .map(|p| slot(*p))
        .collect::<Result<Vec<_>, _>>()?;
    let sel = PcrSelectionListBuilder::new()
        .with_selection(hashing(bank), &slots)
        .build()
        .map_err(|e| TpmError::Data(e.to_string()))?;
    Ok((slots, sel))
}

/// An open TPM.
pub struct Tpm {
    ctx: Context,
}

impl std::fmt::Debug for Tpm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tpm")
    }
}

impl Tpm {
    /// Open a TPM. tpm2-tss logging is silenced unless `TSS2_LOG` is set: expected failures
    /// (a policy that does not match) would otherwise print ESYS errors on stderr.
    pub fn open(tcti: &str) -> Result<Self, TpmError> {
        if std::env::var_os("TSS2_LOG").is_none() {
            std::env::set_var("TSS2_LOG", "all+none");
        }
        let conf = TctiNameConf::from_str(tcti).map_err(|e| TpmError::Tcti {
            tcti: tcti.into(),
            reason: e.to_string(),
        })?;
        let ctx = Context::new(conf).map_err(|e| TpmError::Open {
            tcti: tcti.into(),
            reason: e.to_string(),
        })?;
        Ok(Tpm { ctx })
    }

    /// The TCTI from `BOOTCHAIN_TCTI`, else [`DEFAULT_TCTI`].
    pub fn tcti_from_env() -> String {
        std::env::var("BOOTCHAIN_TCTI").unwrap_or_else(|_| DEFAULT_TCTI.to_string())
    }

    /// Read PCR values.
    pub fn read_pcrs(&mut self, which: &[(HashAlg, u32)]) -> Result<PcrValues, TpmError> {
        let mut out = PcrValues::new();
        for bank in HashAlg::ALL {
            let pcrs: Vec<u32> = which
                .iter()
                .filter(|(b, _)| *b == bank)
                .map(|(_, i)| *i)
                .collect();
            if pcrs.is_empty() {
                continue;
            }
            let (slots, sel) = selection_list(bank, &pcrs)?;
            let data = tss_pcr::read_all(&mut self.ctx, sel).map_err(cmd_err("PCR_Read"))?;
            let bank_data = data.pcr_bank(hashing(bank)).ok_or_else(|| {
                TpmError::Data(format!(
                    "the TPM returned no {bank} bank (is it allocated?)"
                ))
            })?;
            for (p, s) in pcrs.iter().zip(&slots) {
                let d = bank_data
                    .get_digest(*s)
                    .ok_or_else(|| TpmError::Data(format!("no value for {bank} PCR {p}")))?;
                let d = Digest::new(bank, d.value().to_vec())
                    .map_err(|e| TpmError::Data(e.to_string()))?;
                out.insert((bank, *p), d);
            }
        }
        Ok(out)
    }

    /// Extend a PCR with digests (one per bank given).
    pub fn extend(&mut self, pcr: u32, digests: &[Digest]) -> Result<(), TpmError> {
        use tss_esapi::handles::PcrHandle;
        if pcr > 23 {
            return Err(TpmError::Data(format!("PCR {pcr} out of range")));
        }
        let handle = PcrHandle::try_from(tss_esapi::tss2_esys::ESYS_TR_PCR0 + pcr)
            .map_err(|e| TpmError::Data(e.to_string()))?;
        let mut vals = DigestValues::new();
        for d in digests {
            let v = tss_esapi::structures::Digest::try_from(d.as_bytes().to_vec())
                .map_err(|e| TpmError::Data(e.to_string()))?;
            vals.set(hashing(d.alg()), v);
        }
        self.ctx
            .execute_with_nullauth_session(|ctx| ctx.pcr_extend(handle, vals))
            .map_err(cmd_err("PCR_Extend"))
    }
}

/// The persistent handle of the Storage Root Key (TCG Provisioning Guidance, "Reserved
/// Handles"; systemd `TPM2_SRK_HANDLE`).
pub const SRK_HANDLE: u32 = 0x8100_0001;

/// A sealed object as the TPM returned it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealedObject {
    /// TPM2B_PRIVATE contents (the buffer, without its size prefix).
    pub private: Vec<u8>,
    /// TPMT_PUBLIC, marshalled.
    pub public: Vec<u8>,
    /// The Name of the parent it was created under.
    pub parent_name: Vec<u8>,
    /// "srk" (persistent 0x81000001) or "ecc-p256" / "rsa-2048" (transient primary).
    pub parent: String,
}

/// Why an unseal was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UnsealError {
    /// The parent key differs from the one the object was sealed under.
    #[error("this TPM's storage key (Name {actual}) is not the one the secret was sealed under (Name {expected}): a different TPM, or its owner hierarchy was cleared")]
    ParentMismatch {
        /// The recorded Name.
        expected: String,
        /// This TPM's Name.
        actual: String,
    },
    /// The policy the TPM computed from the current PCRs is not the sealed one.
    #[error("the current PCR values do not satisfy the sealed policy (policy {actual}, sealed {expected})")]
    PolicyMismatch {
        /// The sealed policy digest.
        expected: String,
        /// The digest of the session.
        actual: String,
    },
    /// Any other TPM failure.
    #[error(transparent)]
    Tpm(#[from] TpmError),
}

struct Parent {
    handle: tss_esapi::handles::KeyHandle,
    name: Vec<u8>,
    transient: bool,
    kind: &'static str,
}

fn srk_attributes(no_da: bool) -> Result<tss_esapi::attributes::ObjectAttributes, TpmError> {
    tss_esapi::attributes::ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_user_with_auth(true)
        .with_restricted(true)
        .with_decrypt(true)
        .with_no_da(no_da)
        .build()
        .map_err(|e| TpmError::Data(e.to_string()))
}

/// The TCG ECC P-256 storage key template (EK Credential Profile L-2 shape, as systemd's
/// `tpm2_get_srk_template`).
fn srk_template_ecc() -> Result<tss_esapi::structures::Public, TpmError> {
    use tss_esapi::interface_types::{algorithm::PublicAlgorithm, ecc::EccCurve};
    use tss_esapi::structures::{
        EccPoint, PublicBuilder, PublicEccParametersBuilder, SymmetricDefinitionObject,
    };
    let params = PublicEccParametersBuilder::new_restricted_decryption_key(
        SymmetricDefinitionObject::AES_128_CFB,
        EccCurve::NistP256,
    )
    .build()
    .map_err(|e| TpmError::Data(e.to_string()))?;
    PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::Ecc)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(srk_attributes(true)?)
        .with_ecc_parameters(params)
        .with_ecc_unique_identifier(EccPoint::default())
        .build()
        .map_err(|e| TpmError::Data(e.to_string()))
}

impl Tpm {
    fn parent(&mut self) -> Result<Parent, TpmError> {
        use tss_esapi::handles::{KeyHandle, PersistentTpmHandle, TpmHandle};
        use tss_esapi::interface_types::resource_handles::Hierarchy;
        if let Ok(h) = PersistentTpmHandle::new(SRK_HANDLE) {
            if let Ok(obj) = self.ctx.tr_from_tpm_public(TpmHandle::Persistent(h)) {
                let name = self
                    .ctx
                    .tr_get_name(obj)
                    .map_err(cmd_err("TR_GetName"))?
                    .value()
                    .to_vec();
                return Ok(Parent {
                    handle: KeyHandle::from(obj),
                    name,
                    transient: false,
                    kind: "srk",
                });
            }
        }
        let template = srk_template_ecc()?;
        let r = self
            .ctx
            .execute_with_nullauth_session(|ctx| {
                ctx.create_primary(Hierarchy::Owner, template, None, None, None, None)
            })
            .map_err(cmd_err("CreatePrimary"))?;
        let name = self
            .ctx
            .tr_get_name(r.key_handle.into())
            .map_err(cmd_err("TR_GetName"))?
            .value()
            .to_vec();
        Ok(Parent {
            handle: r.key_handle,
            name,
            transient: true,
            kind: "ecc-p256",
        })
    }

    fn release(&mut self, p: Parent) {
        if p.transient {
            let _ = self.ctx.flush_context(p.handle.into());
        }
    }

    /// A session salted with the parent key, with parameter encryption both ways, so secrets
    /// never cross the TPM bus in clear.
    fn salted_session(
        &mut self,
        parent: &Parent,
        kind: tss_esapi::constants::SessionType,
    ) -> Result<tss_esapi::interface_types::session_handles::AuthSession, TpmError> {
        use tss_esapi::attributes::SessionAttributesBuilder;
        use tss_esapi::structures::SymmetricDefinition;
        let s = self
            .ctx
            .start_auth_session(
                Some(parent.handle),
                None,
                None,
                kind,
                SymmetricDefinition::AES_128_CFB,
                HashingAlgorithm::Sha256,
            )
            .map_err(cmd_err("StartAuthSession"))?
            .ok_or_else(|| TpmError::Data("no session returned".into()))?;
        let (attrs, mask) = SessionAttributesBuilder::new()
            .with_decrypt(true)
            .with_encrypt(true)
            .with_continue_session(true)
            .build();
        self.ctx
            .tr_sess_set_attributes(s, attrs, mask)
            .map_err(cmd_err("TRSess_SetAttributes"))?;
        Ok(s)
    }

    fn flush_session(&mut self, s: tss_esapi::interface_types::session_handles::AuthSession) {
        use tss_esapi::handles::SessionHandle;
        let h: SessionHandle = s.into();
        let _ = self.ctx.flush_context(h.into());
    }

    /// Seal `secret` (at most 128 bytes) under the SRK (or a transient ECC primary) in a
    /// keyed-hash object that only `policy` can authorize: attributes fixedTPM|fixedParent and
    /// no userWithAuth, as systemd-cryptenroll seals.
    pub fn seal(&mut self, policy: &Digest, secret: &[u8]) -> Result<SealedObject, TpmError> {
        use tss_esapi::attributes::ObjectAttributesBuilder;
        use tss_esapi::interface_types::algorithm::PublicAlgorithm;
        use tss_esapi::structures::{
            KeyedHashScheme, PublicBuilder, PublicKeyedHashParameters, SensitiveData,
        };
        use tss_esapi::traits::Marshall;
        let attrs = ObjectAttributesBuilder::new()
            .with_fixed_tpm(true)
            .with_fixed_parent(true)
            .build()
            .map_err(|e| TpmError::Data(e.to_string()))?;
        let public = PublicBuilder::new()
            .with_public_algorithm(PublicAlgorithm::KeyedHash)
            .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
            .with_object_attributes(attrs)
            .with_auth_policy(
                tss_esapi::structures::Digest::try_from(policy.as_bytes().to_vec())
                    .map_err(|e| TpmError::Data(e.to_string()))?,
            )
            .with_keyed_hash_parameters(PublicKeyedHashParameters::new(KeyedHashScheme::Null))
            .with_keyed_hash_unique_identifier(Default::default())
            .build()
            .map_err(|e| TpmError::Data(e.to_string()))?;
        let data = SensitiveData::try_from(secret.to_vec())
            .map_err(|e| TpmError::Data(format!("secret too large to seal: {e}")))?;
        let parent = self.parent()?;
        let session = match self.salted_session(&parent, tss_esapi::constants::SessionType::Hmac) {
            Ok(s) => s,
            Err(e) => {
                self.release(parent);
                return Err(e);
            }
        };
        let r = self.ctx.execute_with_session(Some(session), |ctx| {
            ctx.create(parent.handle, public, None, Some(data), None, None)
        });
        self.flush_session(session);
        let out = r.map_err(cmd_err("Create"));
        let result = out.and_then(|r| {
            Ok(SealedObject {
                private: r.out_private.value().to_vec(),
                public: r
                    .out_public
                    .marshall()
                    .map_err(|e| TpmError::Data(e.to_string()))?,
                parent_name: parent.name.clone(),
                parent: parent.kind.to_string(),
            })
        });
        self.release(parent);
        result
    }

    /// Unseal: check the parent, load the object, satisfy its policy with PolicyPCR over
    /// `pcrs` of `bank` in a salted, encrypting policy session, and unseal.
    pub fn unseal(
        &mut self,
        obj: &SealedObject,
        bank: HashAlg,
        pcrs: &[u32],
        expected_policy: &Digest,
    ) -> Result<zeroize::Zeroizing<Vec<u8>>, UnsealError> {
        use tss_esapi::interface_types::session_handles::PolicySession;
        use tss_esapi::structures::Private;
        use tss_esapi::traits::UnMarshall;
        let public = tss_esapi::structures::Public::unmarshall(&obj.public)
            .map_err(|e| TpmError::Data(format!("sealed public area: {e}")))?;
        let private = Private::try_from(obj.private.clone())
            .map_err(|e| TpmError::Data(format!("sealed private area: {e}")))?;
        let parent = self.parent()?;
        if parent.name != obj.parent_name {
            let e = UnsealError::ParentMismatch {
                expected: hex::encode(&obj.parent_name),
                actual: hex::encode(&parent.name),
            };
            self.release(parent);
            return Err(e);
        }
        let loaded = self
            .ctx
            .execute_with_nullauth_session(|ctx| ctx.load(parent.handle, private, public))
            .map_err(cmd_err("Load"));
        let loaded = match loaded {
            Ok(h) => h,
            Err(e) => {
                self.release(parent);
                return Err(e.into());
            }
        };
        let result = (|| -> Result<zeroize::Zeroizing<Vec<u8>>, UnsealError> {
            let session =
                self.salted_session(&parent, tss_esapi::constants::SessionType::Policy)?;
            let r = (|| -> Result<zeroize::Zeroizing<Vec<u8>>, UnsealError> {
                let ps =
                    PolicySession::try_from(session).map_err(|e| TpmError::Data(e.to_string()))?;
                let (_, sel) = selection_list(bank, pcrs)?;
                self.ctx
                    .policy_pcr(ps, Default::default(), sel)
                    .map_err(cmd_err("PolicyPCR"))?;
                let got = self
                    .ctx
                    .policy_get_digest(ps)
                    .map_err(cmd_err("PolicyGetDigest"))?;
                if got.value() != expected_policy.as_bytes() {
                    return Err(UnsealError::PolicyMismatch {
                        expected: expected_policy.to_hex(),
                        actual: hex::encode(got.value()),
                    });
                }
                let data = self
                    .ctx
                    .execute_with_session(Some(session), |ctx| ctx.unseal(loaded.into()))
                    .map_err(cmd_err("Unseal"))?;
                Ok(zeroize::Zeroizing::new(data.value().to_vec()))
            })();
            self.flush_session(session);
            r
        })();
        let _ = self.ctx.flush_context(loaded.into());
        self.release(parent);
        result
    }
}
