//! One connection to the token: the module initialised, the user logged in through an
//! anchor session that stays open (SoftHSM logs the token out when its last session
//! closes), and the configured keys found once, with their certificates and chains.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use cryptoki::session::Session;
use cryptoki::slot::Slot;
use openssl::x509::X509;
use secrecy::SecretString;

use super::api::KeyInfo;
use super::counters::TokenCounters;
use super::want::KeyWant;
use crate::cert::{Curve, KeyKind};
use crate::config::Purpose;
use crate::token::{
    check_derive_mechanism, check_mechanisms, find_objects, Module, OpenToken, StoredKey,
    TokenError, TokenSelector,
};

/// A key found on the token, ready to sign with: what the server sees of it
/// ([`KeyInfo`]) and the private key object, which stays on this side.
pub struct TokenKey {
    /// The private key object.
    pub handle: cryptoki::object::ObjectHandle,
    /// Label, kind, certificate and chain.
    pub info: Arc<KeyInfo>,
}

impl std::ops::Deref for TokenKey {
    type Target = KeyInfo;

    fn deref(&self) -> &KeyInfo {
        &self.info
    }
}

/// How often the supervisor looks on the token again for a missing key (requests for it
/// do not look: they are answered from the missing key's reason at once).
pub const RECHECK_EVERY: Duration = Duration::from_secs(1);

/// A configured key that this connection cannot use right now.
#[derive(Debug, Clone)]
pub struct MissingKey {
    /// Why, for the answer and health.
    pub reason: String,
    /// When it was last looked for.
    checked: Instant,
}

/// How [`Connection::connect`] treats a configured key it cannot use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keys {
    /// Every key must be there (the daemon's first start: a wrong label is a
    /// configuration error, reported before the daemon serves).
    AllRequired,
    /// A key that is missing or broken is recorded as missing, and the connection
    /// comes up with the others (a reconnect: one key's fault stays that key's).
    Tolerate,
}

/// A live, logged-in connection to the token.
pub struct Connection {
    /// Counts connections; a pooled session belongs to one generation.
    pub generation: u64,
    /// The token's label, for messages.
    pub token_label: String,
    slot: Slot,
    keys: RwLock<Arc<HashMap<String, Arc<TokenKey>>>>,
    /// Configured keys this connection could not use, and why: a key deleted or broken
    /// under the running daemon. The other keys keep signing; a request for one of these
    /// gets its reason, and the supervisor looks for it again at most once per
    /// [`RECHECK_EVERY`] ([`Connection::recheck_missing`]).
    missing: Mutex<HashMap<String, MissingKey>>,
    anchor: Mutex<Session>,
    counters: TokenCounters,
    // Last: dropped after the sessions, so C_Finalize comes after C_CloseSession.
    module: Module,
}

impl Connection {
    /// Loads the module, finds the token, logs in once, finds the keys.
    pub fn connect(
        module: &std::path::Path,
        selector: &TokenSelector,
        pin: &SecretString,
        wants: &[KeyWant],
        generation: u64,
        counters: TokenCounters,
        keys: Keys,
    ) -> Result<Self, TokenError> {
        let token = OpenToken::open(module, selector, false)?;
        counters.sessions_opened.inc();
        counters.logins.inc();
        token.login(pin, false)?;
        let OpenToken {
            session: anchor,
            info,
            slot,
            module,
        } = token;
        let conn = Self {
            counters,
            generation,
            token_label: info.label,
            slot,
            keys: RwLock::new(Arc::new(HashMap::new())),
            missing: Mutex::new(HashMap::new()),
            anchor: Mutex::new(anchor),
            module,
        };
        match keys {
            Keys::AllRequired => conn.load_keys(wants)?,
            Keys::Tolerate => {
                for want in wants {
                    match conn.load_keys(std::slice::from_ref(want)) {
                        Ok(()) => {}
                        Err(e) if e.is_key_fault() => {
                            tracing::error!(label = %want.label, error = %e, "a configured key is not usable; the other keys sign");
                            conn.mark_missing(&want.label, &e);
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        Ok(conn)
    }

    /// Records that the key labelled `label` cannot be used, and takes it out of the
    /// table, so that requests for it get 503 `key_unavailable` at once.
    pub fn mark_missing(&self, label: &str, why: &TokenError) {
        if let Ok(mut keys) = self.keys.write() {
            if keys.contains_key(label) {
                let mut table = (**keys).clone();
                table.remove(label);
                *keys = Arc::new(table);
            }
        }
        if let Ok(mut missing) = self.missing.lock() {
            missing.insert(
                label.to_string(),
                MissingKey {
                    reason: why.to_string(),
                    checked: Instant::now(),
                },
            );
        }
    }

    /// Why the key labelled `label` is not usable, if this connection knows.
    pub fn missing(&self, label: &str) -> Option<MissingKey> {
        self.missing.lock().ok()?.get(label).cloned()
    }

    /// The key labelled `label`, or why it is not usable (`None`: not configured or
    /// not loaded yet). No token call.
    pub fn key_or_why(&self, label: &str) -> Result<Arc<TokenKey>, Option<String>> {
        self.key(label)
            .ok_or_else(|| self.missing(label).map(|m| m.reason))
    }

    /// Looks for the keys marked missing once more, those last looked for at least
    /// [`RECHECK_EVERY`] ago (one may have been imported again meanwhile). Called by the
    /// supervisor, so no request waits on these token calls. Returns the labels found.
    pub fn recheck_missing(&self, wants: &[KeyWant]) -> Vec<String> {
        let due: Vec<String> = match self.missing.lock() {
            Ok(mut missing) => missing
                .iter_mut()
                .filter(|(_, m)| m.checked.elapsed() >= RECHECK_EVERY)
                .map(|(label, m)| {
                    m.checked = Instant::now();
                    label.clone()
                })
                .collect(),
            Err(_) => return Vec::new(),
        };
        let mut found = Vec::new();
        for label in due {
            if !wants.iter().any(|w| w.label == label) {
                // No longer configured (a reload dropped it).
                if let Ok(mut missing) = self.missing.lock() {
                    missing.remove(&label);
                }
                continue;
            }
            match self.refresh_key(&label, wants) {
                Ok(()) => {
                    if let Ok(mut missing) = self.missing.lock() {
                        missing.remove(&label);
                    }
                    tracing::warn!(label, "a key that was not usable is usable again");
                    found.push(label);
                }
                Err(e) => self.mark_missing(&label, &e),
            }
        }
        found
    }

    /// The token's own health, apart from any one key: the anchor session is alive, the
    /// token answers C_GetTokenInfo, the device itself answers C_GenerateRandom, and it
    /// still shows objects. A token whose store went away (a SoftHSM directory moved, a
    /// card pulled) or whose device is gone fails it; a token where one key was deleted or
    /// is broken passes. The random bytes matter on a TPM: tpm2-pkcs11 answers the other
    /// calls from its own database even when the TPM behind it is dead.
    pub fn probe(&self) -> Result<(), TokenError> {
        let anchor = self.anchor.lock().map_err(|_| TokenError::BadObject {
            label: String::new(),
            token: self.token_label.clone(),
            detail: "session lock poisoned".into(),
        })?;
        anchor
            .get_session_info()
            .map_err(TokenError::pkcs11("checking the daemon's session"))?;
        self.module
            .ctx()
            .get_token_info(self.slot)
            .map_err(TokenError::pkcs11("reading the token's information"))?;
        anchor
            .generate_random_vec(16)
            .map_err(TokenError::pkcs11("asking the token for random bytes"))?;
        if find_objects(&anchor, None, None, None)?.is_empty() {
            return Err(TokenError::TokenEmpty {
                token: self.token_label.clone(),
            });
        }
        Ok(())
    }

    /// Opens a session for the pool. Login state is the token's, so it is logged in.
    pub fn open_session(&self) -> Result<Session, TokenError> {
        self.counters.sessions_opened.inc();
        self.module
            .ctx()
            .open_ro_session(self.slot)
            .map_err(TokenError::pkcs11("opening a signing session"))
    }

    /// The key labelled `label`, if this connection found it.
    pub fn key(&self, label: &str) -> Option<Arc<TokenKey>> {
        self.keys.read().ok()?.get(label).cloned()
    }

    /// Finds the key labelled `label` again (after its handle stopped being valid).
    pub fn refresh_key(&self, label: &str, wants: &[KeyWant]) -> Result<(), TokenError> {
        let want: Vec<KeyWant> = wants.iter().filter(|w| w.label == label).cloned().collect();
        self.load_keys(&want)
    }

    /// Finds every wanted key again (and checks the token has their mechanisms),
    /// replacing the table only when all are found, so a bad reload changes nothing.
    pub fn load_keys(&self, wants: &[KeyWant]) -> Result<(), TokenError> {
        let anchor = self.anchor.lock().map_err(|_| TokenError::BadObject {
            label: String::new(),
            token: self.token_label.clone(),
            detail: "session lock poisoned".into(),
        })?;
        let authorities = read_all_certs(&anchor)?;
        // Keys loaded before stay in the table: a request admitted under the previous
        // configuration while a reload runs still finds its key.
        let mut table: HashMap<String, Arc<TokenKey>> =
            self.keys.read().map(|k| (**k).clone()).unwrap_or_default();
        let mut found = std::collections::HashSet::new();
        for want in wants {
            if !found.insert(want.label.as_str()) {
                continue;
            }
            let stored = StoredKey::find(&anchor, &self.token_label, &want.label)?;
            match want.purpose {
                Purpose::Sign => self.check_signing(want, &stored)?,
                Purpose::Decrypt => self.check_decrypting(&anchor, want, &stored)?,
            }
            let der = stored.cert.to_der().unwrap_or_default();
            let not_after = crate::cert::CertInfo::of(&stored.cert)
                .map(|i| i.not_after_unix)
                .unwrap_or(i64::MAX);
            table.insert(
                want.label.clone(),
                Arc::new(TokenKey {
                    handle: stored.handle,
                    info: Arc::new(KeyInfo {
                        label: want.label.clone(),
                        kind: stored.kind,
                        chain: chain_of(&stored.cert, &authorities),
                        cert_sha256: hex::encode(openssl::sha::sha256(&der)),
                        cert: stored.cert,
                        not_after,
                    }),
                }),
            );
        }
        if let Ok(mut keys) = self.keys.write() {
            *keys = Arc::new(table);
        }
        Ok(())
    }

    /// A sign key: every configured algorithm fits it and the token has its mechanism.
    fn check_signing(&self, want: &KeyWant, stored: &StoredKey) -> Result<(), TokenError> {
        if let Some(misfit) = want.algorithms.iter().find(|a| !a.fits(stored.kind)) {
            return Err(TokenError::BadObject {
                label: want.label.clone(),
                token: self.token_label.clone(),
                detail: format!("the key is {}, which cannot sign {misfit}; fix algorithms for this key in the configuration", stored.kind),
            });
        }
        check_mechanisms(
            self.module.ctx(),
            self.slot,
            &self.token_label,
            &format!("key \"{}\"", want.label),
            &want.algorithms,
        )
    }

    /// A decrypt key: EC P-256 (WK's curve), CKA_DERIVE true, and CKM_ECDH1_DERIVE on
    /// the token. Checked at start and on reload, so a key imported without
    /// `--allow-derive` is named then, not at the first citizen's login.
    fn check_decrypting(
        &self,
        session: &Session,
        want: &KeyWant,
        stored: &StoredKey,
    ) -> Result<(), TokenError> {
        let bad = |detail: String| TokenError::BadObject {
            label: want.label.clone(),
            token: self.token_label.clone(),
            detail,
        };
        if stored.kind != (KeyKind::Ec { curve: Curve::P256 }) {
            return Err(bad(format!(
                "the key is {}; a decrypt key for WK must be EC P-256",
                stored.kind
            )));
        }
        let derive = session
            .get_attributes(stored.handle, &[AttributeType::Derive])
            .map_err(TokenError::pkcs11("reading CKA_DERIVE of a decrypt key"))?
            .into_iter()
            .any(|a| matches!(a, Attribute::Derive(true)));
        if !derive {
            return Err(bad(format!(
                "the key has CKA_DERIVE false, so it cannot do ECDH for purpose = \"decrypt\"; re-import it with `hsm-signer import --token {token} --p12 FILE --label {label} --allow-derive --replace`",
                token = self.token_label,
                label = want.label,
            )));
        }
        check_derive_mechanism(
            self.module.ctx(),
            self.slot,
            &self.token_label,
            &format!("decrypt key \"{}\"", want.label),
        )
    }

    /// Logs in again on this connection after the token dropped the login
    /// (CKR_USER_NOT_LOGGED_IN): not a retry of a failed PIN.
    pub fn relogin(&self, pin: &SecretString) -> Result<(), TokenError> {
        let anchor = self.anchor.lock().map_err(|_| TokenError::BadObject {
            label: String::new(),
            token: self.token_label.clone(),
            detail: "session lock poisoned".into(),
        })?;
        crate::token::login(
            self.module.ctx(),
            self.slot,
            &self.token_label,
            &anchor,
            pin,
            false,
        )
    }
}

fn read_all_certs(session: &Session) -> Result<Vec<X509>, TokenError> {
    let handles = find_objects(session, Some(ObjectClass::CERTIFICATE), None, None)?;
    let mut out = Vec::new();
    for handle in handles {
        let attrs = session
            .get_attributes(handle, &[AttributeType::Value])
            .map_err(TokenError::pkcs11("reading certificates on the token"))?;
        for attr in attrs {
            if let Attribute::Value(der) = attr {
                if let Ok(cert) = X509::from_der(&der) {
                    out.push(cert);
                }
            }
        }
    }
    Ok(out)
}

/// Walks issuer → subject through `pool`, nearest CA first, stopping at a self-signed one.
fn chain_of(leaf: &X509, pool: &[X509]) -> Vec<X509> {
    let mut chain: Vec<X509> = Vec::new();
    let mut current = leaf.clone();
    while chain.len() < 8 {
        let self_signed =
            current.issuer_name().to_der().ok() == current.subject_name().to_der().ok();
        if self_signed {
            break;
        }
        let issuer = current.issuer_name().to_der().ok();
        let Some(next) = pool.iter().find(|c| {
            c.subject_name().to_der().ok() == issuer
                && c.to_der().ok() != current.to_der().ok()
                && current
                    .verify(&c.public_key().expect("certificate public key"))
                    .unwrap_or(false)
        }) else {
            break;
        };
        chain.push(next.clone());
        current = next.clone();
    }
    chain
}
