//! Loading a PKCS#11 module once per process, and finding tokens in it.

use std::path::{Path, PathBuf};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::slot::Slot;

use super::error::{describe, TokenError};
use super::family::ModuleFamily;
use super::summary::TokenSummary;
use super::uri::TokenSelector;

/// Serialises loading (dlopen and C_Initialize) and unloading (the last dlclose) of
/// modules within this process. Two contexts of the same module can exist at once (the
/// daemon's connection, and a short-lived one such as the protection check); a module such
/// as SoftHSM is not safe against two C_Initialize calls racing, or against one racing the
/// library's unload, so both happen under this lock. Calls made between them are the
/// module's own business (it was initialised with OS locking).
static LOAD: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Holds the lock under which modules are loaded and unloaded ([`LOAD`]); for a second
/// dlopen of a loaded module ([`super::raw::RawModule`]).
pub(super) fn loading() -> std::sync::MutexGuard<'static, ()> {
    LOAD.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A loaded and initialised PKCS#11 module.
pub struct Module {
    /// Always `Some` until dropped (taken in `Drop` to unload under [`LOAD`]).
    ctx: Option<Pkcs11>,
    path: PathBuf,
    family: ModuleFamily,
}

impl Drop for Module {
    fn drop(&mut self) {
        let _unloading = LOAD.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        drop(self.ctx.take());
    }
}

impl std::fmt::Debug for Module {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Module").field("path", &self.path).finish()
    }
}

impl Module {
    /// Loads `path` and calls C_Initialize with OS locking, so sessions may be used from
    /// several threads.
    pub fn open(path: &Path) -> Result<Self, TokenError> {
        let load_err = |detail: String| TokenError::ModuleLoad {
            path: path.to_path_buf(),
            detail,
            found: discover_modules(),
        };
        if !path.is_file() {
            return Err(load_err("no such file".into()));
        }
        let _loading = LOAD.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let ctx = Pkcs11::new(path).map_err(|e| load_err(describe(&e)))?;
        match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
            Err(cause) => {
                return Err(TokenError::ModuleInit {
                    path: path.to_path_buf(),
                    cause,
                    hint: ModuleFamily::detect(path, None).setup_hint(),
                })
            }
        }
        let manufacturer = ctx
            .get_library_info()
            .map(|info| info.manufacturer_id().trim_end().to_string())
            .ok();
        Ok(Self {
            family: ModuleFamily::detect(path, manufacturer.as_deref()),
            ctx: Some(ctx),
            path: path.to_path_buf(),
        })
    }

    /// Which implementation this is, for messages.
    pub fn family(&self) -> ModuleFamily {
        self.family
    }

    /// The cryptoki context.
    pub fn ctx(&self) -> &Pkcs11 {
        self.ctx
            .as_ref()
            .expect("the module is loaded until dropped")
    }

    /// The module's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every initialised token the module shows.
    pub fn tokens(&self) -> Result<Vec<(Slot, TokenSummary)>, TokenError> {
        let slots = self
            .ctx()
            .get_slots_with_initialized_token()
            .map_err(TokenError::pkcs11("listing the module's tokens"))?;
        let mut out = Vec::new();
        for slot in slots {
            let info = match self.ctx().get_token_info(slot) {
                Ok(info) => info,
                // A token pulled out between the two calls is simply not there.
                Err(_) => continue,
            };
            out.push((
                slot,
                TokenSummary {
                    slot: slot.id(),
                    label: info.label().trim_end().to_string(),
                    serial: info.serial_number().trim_end().to_string(),
                    manufacturer: info.manufacturer_id().trim_end().to_string(),
                    model: info.model().trim_end().to_string(),
                    user_pin_initialized: info.user_pin_initialized(),
                },
            ));
        }
        Ok(out)
    }

    /// The one token that `selector` names.
    pub fn find_token(&self, selector: &TokenSelector) -> Result<(Slot, TokenSummary), TokenError> {
        let all = self.tokens()?;
        let mut matching: Vec<_> = all
            .iter()
            .filter(|(_, t)| selector.matches(t))
            .cloned()
            .collect();
        match matching.len() {
            1 => Ok(matching.remove(0)),
            0 => Err(TokenError::TokenNotFound {
                selector: selector.to_string(),
                module: self.path.clone(),
                seen: all.into_iter().map(|(_, t)| t).collect(),
                hint: self.family.setup_hint(),
            }),
            _ => Err(TokenError::TokenAmbiguous {
                selector: selector.to_string(),
                matches: matching.into_iter().map(|(_, t)| t).collect(),
            }),
        }
    }
}

/// Where Debian, Ubuntu and vendors put PKCS#11 modules.
const MODULE_DIRS: &[&str] = &[
    "/usr/lib/softhsm",
    "/usr/lib/x86_64-linux-gnu/softhsm",
    "/usr/lib/x86_64-linux-gnu/pkcs11",
    "/usr/lib/aarch64-linux-gnu/pkcs11",
    "/usr/lib/pkcs11",
    "/usr/lib64/pkcs11",
    "/usr/local/lib/pkcs11",
    "/usr/lib/x86_64-linux-gnu",
    "/opt",
];

/// PKCS#11 modules present on this machine, to suggest when a path is wrong and for
/// `hsm-signer tokens`: the usual directories plus whatever p11-kit's module configs
/// name, less OpenSC's pkcs11-spy. The spy is no token: it wraps the module PKCS11SPY
/// names, logging every call with its arguments (an imported key's private components
/// too), and without PKCS11SPY it only prints an error.
pub fn discover_modules() -> Vec<PathBuf> {
    let mut found = Vec::new();
    for dir in MODULE_DIRS {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if looks_like_module(&path) {
                found.push(path);
            }
        }
    }
    found.extend(p11kit_modules());
    found.retain(|path| !is_spy(path));
    found.sort();
    found.dedup();
    found
}

/// OpenSC's pkcs11-spy (pkcs11-spy.so, and p11-kit's config for it).
fn is_spy(path: &Path) -> bool {
    path.file_name()
        .is_some_and(|n| n.to_string_lossy().contains("pkcs11-spy"))
}

fn looks_like_module(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    let in_pkcs11_dir = path
        .parent()
        .and_then(|p| p.file_name())
        .is_some_and(|d| d == "pkcs11" || d == "softhsm");
    name.ends_with(".so") && (in_pkcs11_dir || name.contains("pkcs11") || name.contains("softhsm2"))
}

fn p11kit_modules() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in ["/usr/share/p11-kit/modules", "/etc/pkcs11/modules"] {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(text) = std::fs::read_to_string(entry.path()) else {
                continue;
            };
            for line in text.lines() {
                if let Some(value) = line.trim().strip_prefix("module:") {
                    let value = PathBuf::from(value.trim());
                    let path = if value.is_absolute() {
                        value
                    } else {
                        Path::new("/usr/lib/x86_64-linux-gnu/pkcs11").join(value)
                    };
                    if path.is_file() {
                        out.push(path);
                    }
                }
            }
        }
    }
    out
}
