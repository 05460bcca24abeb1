//! Token families, and running one test body on several of them.
//!
//! A test body takes a [`Family`] and makes its own tokens with `TestToken::of(family)`.
//! [`on_families!`] declares it once and makes one `#[test]` per family, named
//! `BODY::FAMILY` (`import_then_sign::kryoptic`), so `cargo nextest run -E
//! 'test(kryoptic)'` picks a family and `test(import_then_sign)` a body.
//!
//! A family whose pieces are missing (module not built, packages not installed) is
//! skipped with the reason printed, but only outside CI: under `CI` (set by .ci/run) a
//! missing family fails the test, so a broken CI machine cannot pass by skipping.

use std::path::PathBuf;
use std::process::Command;

use super::{Backend, Result};

/// A kind of PKCS#11 token the suite runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// SoftHSM2 2.6.1 (Debian `softhsm2`): accepts almost anything.
    SoftHsm,
    /// kryoptic (crates.io `kryoptic-lib`, built by scripts/build-kryoptic): PKCS#11 3.0,
    /// RFC 5649 only as CKM_AES_KEY_WRAP_KWP.
    Kryoptic,
    /// tpm2-pkcs11 on swtpm: takes no private key through PKCS#11.
    Tpm,
}

impl Family {
    /// The family an [`on_families!`] list names (`softhsm`, `kryoptic`, `tpm`).
    pub fn named(name: &str) -> Family {
        match name {
            "softhsm" => Family::SoftHsm,
            "kryoptic" => Family::Kryoptic,
            "tpm" => Family::Tpm,
            other => panic!("unknown token family {other:?} in on_families!"),
        }
    }

    /// A short prefix for token labels.
    pub fn short(self) -> &'static str {
        match self {
            Family::SoftHsm => "t",
            Family::Kryoptic => "k",
            Family::Tpm => "p",
        }
    }

    /// Whether the family takes a private key through PKCS#11 (C_CreateObject or
    /// C_UnwrapKey). tpm2-pkcs11 takes neither: keys reach it by `tpm2_ptool import`
    /// (`ModuleFamily::takes_private_keys` in src/token/family.rs).
    pub fn takes_private_keys(self) -> bool {
        !matches!(self, Family::Tpm)
    }

    /// Whether the module reads its key store once per process and keeps a key loaded
    /// after another process deleted it: tpm2-pkcs11 does (its store is an SQLite file
    /// read at C_Initialize, its keys stay loaded in the TPM), so a running daemon goes
    /// on signing with a deleted key until it reconnects (docs/tpm.md).
    pub fn store_read_once(self) -> bool {
        matches!(self, Family::Tpm)
    }

    /// Why this family cannot run here, or None when it can. A family switched off on
    /// purpose says so in [`Self::switched_off`].
    pub fn missing(self) -> Option<String> {
        match self {
            Family::SoftHsm => (!std::path::Path::new(super::MODULE).is_file())
                .then(|| format!("{} missing: apt-get install softhsm2", super::MODULE)),
            Family::Kryoptic => match kryoptic_module() {
                Some(path) if path.is_file() => None,
                Some(path) => Some(format!(
                    "the kryoptic module {} is missing: run scripts/build-kryoptic and set HSM_SIGNER_TEST_KRYOPTIC to the path it prints",
                    path.display()
                )),
                None => Some("HSM_SIGNER_TEST_KRYOPTIC is not set and target/kryoptic-module has no build: run scripts/build-kryoptic".into()),
            },
            Family::Tpm => super::tpm::missing(),
        }
    }

    /// Why this family is off on purpose, or None. None is: every family runs.
    pub fn switched_off(self) -> Option<String> {
        None
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Family::SoftHsm => "SoftHSM2",
            Family::Kryoptic => "kryoptic",
            Family::Tpm => "tpm2-pkcs11",
        })
    }
}

/// The kryoptic module: HSM_SIGNER_TEST_KRYOPTIC, else where scripts/build-kryoptic
/// puts it in this checkout.
pub fn kryoptic_module() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("HSM_SIGNER_TEST_KRYOPTIC") {
        return Some(PathBuf::from(path));
    }
    let built = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/kryoptic-module/release/libkryoptic_pkcs11.so");
    built.is_file().then_some(built)
}

/// Runs `body` on `family`, or skips it (printing why) when the family is switched off,
/// or missing outside CI. Under CI a missing family is an error.
pub fn run_on(family: Family, body: impl FnOnce(Family) -> Result) -> Result {
    if let Some(why) = family.switched_off() {
        eprintln!("SKIPPED on {family}: {why}");
        return Ok(());
    }
    if let Some(why) = family.missing() {
        if std::env::var_os("CI").is_some() {
            return Err(format!("{family} is missing on this CI machine: {why}").into());
        }
        eprintln!("SKIPPED on {family} (CI is unset, so this is not a failure): {why}");
        return Ok(());
    }
    body(family)
}

/// The serial of the token labelled `label`, as pkcs11-tool lists it.
pub fn serial_of(backend: &Backend, label: &str) -> Result<String> {
    let out = super::run_ok(
        Command::new("pkcs11-tool")
            .envs(backend.env.iter().map(|(k, v)| (k, v)))
            .arg("--module")
            .arg(&backend.module)
            .arg("--list-token-slots"),
    )?;
    let text = String::from_utf8(out.stdout)?;
    let mut in_ours = false;
    for line in text.lines() {
        let line = line.trim();
        if let Some(value) = line.strip_prefix("token label") {
            in_ours = value.trim_start_matches([' ', ':']).trim() == label;
        } else if let Some(value) = line.strip_prefix("serial num") {
            if in_ours {
                return Ok(value.trim_start_matches([' ', ':']).trim().to_string());
            }
        }
    }
    Err(format!("pkcs11-tool shows no token labelled {label:?}:\n{text}").into())
}

/// Declares a test body once and makes a `#[test]` per family: `on_families!(body,
/// [softhsm, kryoptic, tpm]);` with `fn body(family: Family) -> Result` gives
/// `body::softhsm`, `body::kryoptic` and `body::tpm`.
#[macro_export]
macro_rules! on_families {
    ($body:ident, [$($family:ident),+ $(,)?]) => {
        mod $body {
            $(
                #[test]
                fn $family() -> $crate::common::Result {
                    $crate::common::families::run_on(
                        $crate::common::Family::named(stringify!($family)),
                        super::$body,
                    )
                }
            )+
        }
    };
}
