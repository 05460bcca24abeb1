//! Test support: a freshly initialised token for every test, and helpers to run the real
//! `hsm-signer` binary against it.
//!
//! Tokens come in families ([`Family`]): SoftHSM2 (the default, [`TestToken::new`]),
//! kryoptic ([`kryoptic`]) and tpm2-pkcs11 on swtpm ([`tpm`]). Each token carries its
//! module and the environment that module needs, and every helper here (`hsm_signer`,
//! `on_token`, `pkcs11_tool`, the daemon and p11-kit helpers) uses them, so one test body
//! runs on any family: see [`on_families!`].
//!
//! SoftHSM reads `SOFTHSM2_CONF` once per process, at C_Initialize. Every test process
//! therefore gets its own token directory (set before the first C_Initialize), and every
//! test gets its own token in it, initialised through cryptoki on SoftHSM's free slot and
//! named uniquely. Under cargo-nextest each test is its own process anyway; under plain
//! `cargo test` the tests of one binary share the directory but never a token.

#![allow(missing_docs)]

pub mod daemon;
#[macro_use]
pub mod families;
pub mod fixtures;
pub mod kryoptic;
pub mod p11kit;
pub mod tpm;
pub mod verifiers;

pub use families::Family;

/// What a family's `create` hands back: the module, the environment it needs, and what
/// must live as long as the token.
pub struct Backend {
    /// The PKCS#11 module.
    pub module: PathBuf,
    /// Environment variables the module reads (KRYOPTIC_CONF, TPM2_PKCS11_*).
    pub env: Vec<(String, String)>,
    /// Dropped with the token: temporary directories, processes to stop.
    pub guard: Option<Box<dyn std::any::Any + Send>>,
}

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;

pub type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Debian's SoftHSM2 module.
pub const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
/// The user PIN of every test token.
pub const PIN: &str = "1234";
/// The SO PIN of every test token.
pub const SO_PIN: &str = "5678";

struct Shared {
    conf: PathBuf,
    ctx: Pkcs11,
}

fn shared() -> &'static Mutex<Shared> {
    static SHARED: OnceLock<Mutex<Shared>> = OnceLock::new();
    SHARED.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("hsm-signer-test-")
            .tempdir()
            .expect("temp dir")
            .keep();
        let tokens = dir.join("tokens");
        std::fs::create_dir_all(&tokens).expect("token dir");
        let conf = dir.join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
                tokens.display()
            ),
        )
        .expect("softhsm2.conf");
        // Before the first C_Initialize in this process; children inherit it too.
        std::env::set_var("SOFTHSM2_CONF", &conf);
        let ctx = Pkcs11::new(MODULE).expect("SoftHSM2 module (apt-get install softhsm2)");
        ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
            .expect("C_Initialize");
        Mutex::new(Shared { conf, ctx })
    })
}

/// A freshly initialised token of this test's own.
pub struct TestToken {
    /// Which kind of token.
    pub family: Family,
    /// Its PKCS#11 module.
    pub module: PathBuf,
    /// The environment the module needs (SOFTHSM2_CONF, KRYOPTIC_CONF, TPM2_PKCS11_*),
    /// set on every command run against the token.
    pub env: Vec<(String, String)>,
    /// The module's configuration file: softhsm2.conf for SoftHSM, the KRYOPTIC_CONF
    /// toml for kryoptic, empty for families without one.
    pub conf: PathBuf,
    /// Its label (unique).
    pub label: String,
    /// Its serial.
    pub serial: String,
    /// A directory of this test's own for files.
    pub dir: tempfile::TempDir,
    /// A file holding [`PIN`], mode 0600.
    pub pin_file: PathBuf,
    /// Whatever must live as long as the token (a process to stop, a directory to
    /// remove); dropped after everything else. In a Mutex so that the token can be
    /// shared between threads, as some tests do.
    pub guard: Mutex<Option<Box<dyn std::any::Any + Send>>>,
}

impl TestToken {
    /// The token's directory: SoftHSM names it by a UUID whose last 16 hex digits are
    /// the serial. Moving it away makes the token vanish for a running daemon.
    pub fn token_dir(&self) -> Result<PathBuf> {
        let tokens = self
            .conf
            .parent()
            .ok_or("conf has no parent")?
            .join("tokens");
        for entry in std::fs::read_dir(&tokens)? {
            let path = entry?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("")
                .replace('-', "");
            if name.ends_with(&self.serial) {
                return Ok(path);
            }
        }
        Err(format!(
            "no directory for serial {} in {}",
            self.serial,
            tokens.display()
        )
        .into())
    }

    /// Initialises a new token with user PIN [`PIN`] and SO PIN [`SO_PIN`].
    pub fn new() -> Result<Self> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let label = format!(
            "t{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let shared = shared().lock().map_err(|_| "token helper poisoned")?;
        let ctx = &shared.ctx;
        let free = ctx
            .get_all_slots()?
            .into_iter()
            .find(|s| {
                ctx.get_token_info(*s)
                    .map(|i| !i.token_initialized())
                    .unwrap_or(false)
            })
            .ok_or("SoftHSM shows no free slot")?;
        let so_pin = AuthPin::from(SO_PIN);
        ctx.init_token(free, &so_pin, &label)?;
        // SoftHSM moves an initialised token to a new slot ID; find it by label.
        let slot = ctx
            .get_slots_with_initialized_token()?
            .into_iter()
            .find(|s| {
                ctx.get_token_info(*s)
                    .map(|i| i.label().trim_end() == label)
                    .unwrap_or(false)
            })
            .ok_or("new token not found")?;
        let serial = ctx
            .get_token_info(slot)?
            .serial_number()
            .trim_end()
            .to_string();
        {
            let session = ctx.open_rw_session(slot)?;
            session.login(UserType::So, Some(&so_pin))?;
            session.init_pin(&AuthPin::from(PIN))?;
            session.logout()?;
        }
        let dir = tempfile::tempdir()?;
        let pin_file = dir.path().join("pin");
        write_secret(&pin_file, PIN)?;
        Ok(Self {
            family: Family::SoftHsm,
            module: PathBuf::from(MODULE),
            env: vec![("SOFTHSM2_CONF".into(), shared.conf.display().to_string())],
            conf: shared.conf.clone(),
            label,
            serial,
            dir,
            pin_file,
            guard: Mutex::new(None),
        })
    }

    /// A fresh token of `family`, with user PIN [`PIN`] and SO PIN [`SO_PIN`]. SoftHSM
    /// is [`TestToken::new`]; the others come from their backend's `create`.
    pub fn of(family: Family) -> Result<Self> {
        if family == Family::SoftHsm {
            return Self::new();
        }
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let label = format!(
            "{}{}-{}",
            family.short(),
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let backend = match family {
            Family::SoftHsm => unreachable!("handled above"),
            Family::Kryoptic => kryoptic::create(&label, SO_PIN, PIN)?,
            Family::Tpm => tpm::create(&label, SO_PIN, PIN)?,
        };
        let conf = backend
            .env
            .iter()
            .find(|(k, _)| k == "KRYOPTIC_CONF" || k == "SOFTHSM2_CONF")
            .map(|(_, v)| PathBuf::from(v))
            .unwrap_or_default();
        let serial = families::serial_of(&backend, &label)?;
        let dir = tempfile::tempdir()?;
        let pin_file = dir.path().join("pin");
        write_secret(&pin_file, PIN)?;
        Ok(Self {
            family,
            module: backend.module,
            env: backend.env,
            conf,
            label,
            serial,
            dir,
            pin_file,
            guard: Mutex::new(backend.guard),
        })
    }

    /// The module's path as text, for configuration files and arguments.
    pub fn module_str(&self) -> String {
        self.module.display().to_string()
    }

    /// A path in this test's directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `hsm-signer` with this token's module environment, and a clean secret environment.
    pub fn hsm_signer(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hsm-signer"));
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)))
            .env_remove("HSM_SIGNER_PIN")
            .env_remove("HSM_SIGNER_P12_PASSWORD")
            .env_remove("HSM_SIGNER_MODULE")
            .env_remove("HSM_SIGNER_TOKEN")
            .env_remove("HSM_SIGNER_LOG")
            .stdin(std::process::Stdio::null());
        cmd
    }

    /// `program` with the token's environment (tpm2_ptool, tpm2-tools, pkcs11-tool, bash).
    pub fn tool(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(std::process::Stdio::null());
        cmd
    }

    /// `hsm-signer SUBCOMMAND --module M --token LABEL --pin-file F`.
    pub fn on_token(&self, subcommand: &str) -> Command {
        let mut cmd = self.hsm_signer();
        cmd.arg(subcommand)
            .arg("--module")
            .arg(&self.module)
            .args(["--token", &self.label, "--pin-file"])
            .arg(&self.pin_file);
        cmd
    }

    /// `pkcs11-tool` (OpenSC, a tool this project did not write) logged in to this token.
    pub fn pkcs11_tool(&self) -> Command {
        let mut cmd = Command::new("pkcs11-tool");
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)))
            .arg("--module")
            .arg(&self.module)
            .args(["--token-label", &self.label, "--login", "--pin", PIN]);
        cmd
    }

    /// The DER value of the object of `kind` (`cert`, `pubkey`) labelled `label`, read by
    /// pkcs11-tool (OpenSC's, not this project's code).
    pub fn read_object(&self, kind: &str, label: &str) -> Result<Vec<u8>> {
        let out =
            run_ok(
                self.pkcs11_tool()
                    .args(["--read-object", "--type", kind, "--label", label]),
            )?;
        Ok(out.stdout)
    }

    /// The objects on the token as pkcs11-tool lists them, one header line each
    /// ("Private Key Object; RSA", "Certificate Object; type = X.509 cert", ...), with
    /// their label and ID lines, in a stable order.
    pub fn objects(&self) -> Result<Vec<String>> {
        let out = run_ok(self.pkcs11_tool().arg("--list-objects"))?;
        let text = String::from_utf8(out.stdout)?;
        let mut objects = Vec::new();
        for line in text.lines() {
            if !line.starts_with(' ') && line.contains("Object;") {
                objects.push(line.trim().to_string());
            } else if let (Some(last), Some(field)) = (objects.last_mut(), object_field(line)) {
                last.push_str(&format!(" | {field}"));
            }
        }
        objects.sort();
        Ok(objects)
    }
}

fn object_field(line: &str) -> Option<&str> {
    let t = line.trim();
    (t.starts_with("label:") || t.starts_with("ID:")).then_some(t)
}

/// Writes a secret file with mode 0600.
pub fn write_secret(path: &Path, value: &str) -> Result {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(value.as_bytes())?;
    Ok(())
}

/// Runs `cmd`, failing with its output when it does not exit 0.
pub fn run_ok(cmd: &mut Command) -> Result<Output> {
    let out = cmd.output()?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(out)
}

/// Runs `cmd`, expecting it to fail; returns its standard error.
pub fn run_fails(cmd: &mut Command) -> Result<String> {
    let out = cmd.output()?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.success() {
        return Err(format!(
            "{cmd:?} succeeded but should have failed:\nstdout: {}\nstderr: {stderr}",
            String::from_utf8_lossy(&out.stdout)
        )
        .into());
    }
    Ok(stderr)
}

impl TestToken {
    /// Runs `f` with a read-only session on this token, logged in as the user, through
    /// this test process's own cryptoki context rather than the binary's code. SoftHSM
    /// only: the context is the process's one SoftHSM context.
    pub fn with_session<T>(
        &self,
        f: impl FnOnce(&cryptoki::session::Session) -> Result<T>,
    ) -> Result<T> {
        if self.family != Family::SoftHsm {
            return Err(format!(
                "with_session works on SoftHSM test tokens only, not on {}: use pkcs11_tool() or hsm_signer() instead",
                self.family
            )
            .into());
        }
        let shared = shared().lock().map_err(|_| "token helper poisoned")?;
        let ctx = &shared.ctx;
        let slot = ctx
            .get_slots_with_initialized_token()?
            .into_iter()
            .find(|s| {
                ctx.get_token_info(*s)
                    .map(|i| i.label().trim_end() == self.label)
                    .unwrap_or(false)
            })
            .ok_or("this test's token is gone")?;
        let session = ctx.open_ro_session(slot)?;
        session.login(UserType::User, Some(&AuthPin::from(PIN)))?;
        f(&session)
    }
}

/// True when the suite runs under CI (`CI` set, not empty, not "false").
pub fn under_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false")
}

/// A precondition this test cannot create here (`why` names it). Under CI that is a
/// failure naming it, so CI cannot pass by skipping; elsewhere the test prints
/// "SKIPPED: why" and passes. Use as `return missing_precondition("...")`.
pub fn missing_precondition(why: &str) -> Result {
    if under_ci() {
        return Err(format!(
            "cannot run under CI: {why}; scripts/test installs what the tests need"
        )
        .into());
    }
    eprintln!("SKIPPED (CI is unset, so this is not a failure): {why}");
    Ok(())
}

/// The fenced ```sh block after `<!-- test: NAME -->` in `doc` (a path under the
/// repository): a documented procedure a test runs as written.
pub fn doc_block(doc: &str, name: &str) -> Result<String> {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(doc))?;
    let marker = format!("<!-- test: {name} -->");
    let after = text
        .split_once(&marker)
        .ok_or_else(|| format!("{doc} has no {marker}"))?
        .1;
    let body = after
        .split_once("```sh\n")
        .ok_or("no ```sh block after the marker")?
        .1;
    Ok(body
        .split_once("```")
        .ok_or("unclosed block")?
        .0
        .to_string())
}
