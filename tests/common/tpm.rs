//! Test support: a TPM 2.0 token of the test's own, through tpm2-pkcs11.
//!
//! Each [`create`] starts, in a temporary directory of its own:
//! 1. `swtpm` (a software TPM 2.0, Debian `swtpm`) on a Unix socket, its state in the
//!    directory, so parallel tests never share a TPM, a port or a lockout counter;
//! 2. a private D-Bus daemon (`dbus-daemon --config-file` with a socket in the directory);
//! 3. `tpm2-abrmd --session` on that bus, the access broker tpm2-pkcs11 talks to, as a
//!    server's TPM is used (`--allow-root` when the tests run as root);
//!
//! then `tpm2_ptool init` and `tpm2_ptool addtoken` on a `TPM2_PKCS11_STORE` of its own.
//! The environment in [`Backend::env`] points Debian's `libtpm2_pkcs11.so` at all this.
//! Every process is in a process group of its own and is killed with it when the guard
//! drops.
//!
//! A missing tool skips a test with a printed reason, unless `CI` is set: then the test
//! fails ([`available`]).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{run_ok, Backend, Result};

/// Debian's tpm2-pkcs11 module (package libtpm2-pkcs11-1).
pub const TPM_MODULE: &str = "/usr/lib/x86_64-linux-gnu/pkcs11/libtpm2_pkcs11.so";

/// The tools a TPM token needs, with the Debian package that has each.
const TOOLS: &[(&str, &str)] = &[
    ("swtpm", "swtpm"),
    ("dbus-daemon", "dbus"),
    ("tpm2-abrmd", "tpm2-abrmd"),
    ("tpm2_ptool", "libtpm2-pkcs11-tools"),
    ("tpm2_getrandom", "tpm2-tools"),
    ("tpm2_dictionarylockout", "tpm2-tools"),
];

/// Whether the TPM tools are installed. `Ok(false)` (after printing why) lets a test
/// skip on a developer's machine; under `CI` a missing tool is an error, so CI cannot
/// pass by skipping.
pub fn available() -> Result<bool> {
    let Some(why) = missing() else {
        return Ok(true);
    };
    if std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false") {
        return Err(format!("{why}; scripts/test installs them").into());
    }
    eprintln!("SKIPPED: {why}");
    Ok(false)
}

/// Why a TPM token cannot be made here (the tools that are missing), or None.
pub fn missing() -> Option<String> {
    let mut missing: Vec<String> = TOOLS
        .iter()
        .filter(|(tool, _)| which(tool).is_none())
        .map(|(tool, package)| format!("{tool} (apt-get install {package})"))
        .collect();
    if !Path::new(TPM_MODULE).exists() {
        missing.push(format!("{TPM_MODULE} (apt-get install libtpm2-pkcs11-1)"));
    }
    if !Path::new("/usr/lib/x86_64-linux-gnu/libtss2-tcti-tabrmd.so.0").exists() {
        missing.push("the tabrmd TCTI (apt-get install libtss2-tcti-tabrmd0)".into());
    }
    (!missing.is_empty()).then(|| format!("TPM tools missing: {}", missing.join(", ")))
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .chain(["/usr/sbin", "/sbin"])
        .map(|dir| Path::new(dir).join(tool))
        .find(|p| p.is_file())
}

/// The processes behind one TPM token, and its directory.
pub struct Rig {
    dir: tempfile::TempDir,
    swtpm: Option<Child>,
    dbus: Option<Child>,
    abrmd: Option<Child>,
    env: Vec<(String, String)>,
}

impl Rig {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn tpm_socket(&self) -> PathBuf {
        self.path("tpm.sock")
    }

    /// A command with this token's environment.
    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null());
        cmd
    }

    fn start_swtpm(&mut self) -> Result {
        let socket = self.tpm_socket();
        let ctrl = self.path("tpm.sock.ctrl");
        let _ = std::fs::remove_file(&socket);
        let _ = std::fs::remove_file(&ctrl);
        std::fs::create_dir_all(self.path("tpm-state"))?;
        let child = Command::new("swtpm")
            .args(["socket", "--tpm2", "--tpmstate"])
            .arg(format!("dir={}", self.path("tpm-state").display()))
            .arg("--server")
            .arg(format!("type=unixio,path={}", socket.display()))
            .arg("--ctrl")
            .arg(format!("type=unixio,path={}", ctrl.display()))
            // The TPM is started (TPM2_Startup) as firmware would, so no tool must do it.
            .args(["--flags", "not-need-init,startup-clear"])
            .arg("--log")
            .arg(format!("file={},level=1", self.path("swtpm.log").display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()?;
        self.swtpm = Some(child);
        wait_for(&socket, "swtpm's socket")?;
        wait_for(&ctrl, "swtpm's control socket")
    }

    fn start_dbus(&mut self) -> Result {
        let socket = self.path("bus.sock");
        let config = self.path("bus.conf");
        // A session bus of this test's own: anyone on it may own names and talk, which is
        // what tpm2-abrmd --session and its clients need.
        std::fs::write(
            &config,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={}</listen>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
    <allow user="*"/>
  </policy>
</busconfig>
"#,
                socket.display()
            ),
        )?;
        let child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .args(["--nofork", "--nopidfile", "--nosyslog"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.path("dbus.log"))?)
            .process_group(0)
            .spawn()?;
        self.dbus = Some(child);
        wait_for(&socket, "the private D-Bus socket")
    }

    fn start_abrmd(&mut self) -> Result {
        let mut cmd = self.command("tpm2-abrmd");
        cmd.arg("--session")
            .arg(format!("--tcti=swtpm:path={}", self.tpm_socket().display()))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.path("abrmd.log"))?)
            .process_group(0);
        // tpm2-abrmd refuses to run as root without --allow-root.
        if is_root() {
            cmd.arg("--allow-root");
        }
        self.abrmd = Some(cmd.spawn()?);
        // Ready when a TPM command goes through the broker.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = self
                .command("tpm2_getrandom")
                .args(["--hex", "4"])
                .output()?;
            if out.status.success() {
                return Ok(());
            }
            if let Some(status) = self
                .abrmd
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                return Err(format!(
                    "tpm2-abrmd exited with {status}: {}",
                    std::fs::read_to_string(self.path("abrmd.log")).unwrap_or_default()
                )
                .into());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "tpm2-abrmd did not answer within 10 s: {}",
                    String::from_utf8_lossy(&out.stderr)
                )
                .into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the TPM and its broker at once (SIGKILL to their process groups): to a
    /// running daemon the token is gone, as when a TPM's link or broker dies. The TPM
    /// gets no orderly shutdown, which the TPM counts towards its dictionary-attack
    /// lockout (see [`clear_lockout`]).
    pub fn stop(&mut self) -> Result {
        for child in [self.abrmd.take(), self.swtpm.take()].into_iter().flatten() {
            kill_group(child)?;
        }
        Ok(())
    }

    /// Starts the TPM (same state) and its broker again.
    pub fn start(&mut self) -> Result {
        self.start_swtpm()?;
        self.start_abrmd()
    }

    /// `tpm2_dictionarylockout --clear-lockout`: resets the TPM's failed-authorisation
    /// counter, with the lockout hierarchy's auth (empty on a fresh swtpm).
    pub fn clear_lockout(&self) -> Result {
        run_ok(
            self.command("tpm2_dictionarylockout")
                .arg("--clear-lockout"),
        )?;
        Ok(())
    }

    /// `tpm2_getcap properties-variable`: the TPM's lockout counter and state, as text.
    pub fn lockout_state(&self) -> Result<String> {
        let out = run_ok(self.command("tpm2_getcap").arg("properties-variable"))?;
        Ok(String::from_utf8(out.stdout)?)
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        for child in [self.abrmd.take(), self.swtpm.take(), self.dbus.take()]
            .into_iter()
            .flatten()
        {
            let _ = kill_group(child);
        }
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0\n"))
        .unwrap_or(false)
}

/// SIGKILL to the child's whole process group (each helper is started as the leader of
/// its own), then reaps the child.
fn kill_group(mut child: Child) -> Result {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .stderr(Stdio::null())
        .status();
    child.wait()?;
    Ok(())
}

fn wait_for(path: &Path, what: &str) -> Result {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !path.exists() {
        if Instant::now() > deadline {
            return Err(format!("{what} did not appear at {}", path.display()).into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// A fresh TPM token labelled `label` with these PINs, on a TPM of its own.
pub fn create(label: &str, so_pin: &str, pin: &str) -> Result<Backend> {
    let dir = tempfile::Builder::new().prefix("hsm-tpm-").tempdir()?;
    let store = dir.path().join("store");
    std::fs::create_dir_all(&store)?;
    let tcti = "tabrmd:bus_type=session".to_string();
    let env = vec![
        (
            "DBUS_SESSION_BUS_ADDRESS".to_string(),
            format!("unix:path={}", dir.path().join("bus.sock").display()),
        ),
        ("TPM2_PKCS11_STORE".to_string(), store.display().to_string()),
        ("TPM2_PKCS11_TCTI".to_string(), tcti.clone()),
        // For tpm2_ptool and tpm2-tools (tpm2_dictionarylockout).
        ("TPM2TOOLS_TCTI".to_string(), tcti),
        // The TSS logs warnings to standard error by default; errors are enough.
        ("TSS2_LOG".to_string(), "all+ERROR".to_string()),
        // tpm2-pkcs11's own log level: errors only.
        ("TPM2_PKCS11_LOG_LEVEL".to_string(), "0".to_string()),
    ];
    let mut rig = Rig {
        dir,
        swtpm: None,
        dbus: None,
        abrmd: None,
        env,
    };
    rig.start_swtpm()?;
    rig.start_dbus()?;
    rig.start_abrmd()?;
    run_ok(rig.command("tpm2_ptool").arg("init"))?;
    // tpm2_ptool takes the PINs on its command line; a test's throw-away PINs only.
    run_ok(rig.command("tpm2_ptool").args([
        "addtoken",
        "--pid",
        "1",
        "--label",
        label,
        "--sopin",
        so_pin,
        "--userpin",
        pin,
    ]))?;
    Ok(Backend {
        module: PathBuf::from(TPM_MODULE),
        env: rig.env.clone(),
        guard: Some(Box::new(rig)),
    })
}

/// A fresh TPM token of the test's own, or `None` when the tools are missing outside CI
/// (see [`available`]).
pub fn token() -> Result<Option<super::TestToken>> {
    if !available()? {
        return Ok(None);
    }
    let started = Instant::now();
    let token = super::TestToken::of(super::Family::Tpm)?;
    eprintln!(
        "TPM token {} created in {:?}",
        token.label,
        started.elapsed()
    );
    Ok(Some(token))
}

/// Runs `f` on the processes behind `token`, a TPM token (to stop, start, clear the
/// lockout).
pub fn with_rig<T>(token: &super::TestToken, f: impl FnOnce(&mut Rig) -> Result<T>) -> Result<T> {
    let mut guard = token.guard.lock().map_err(|_| "token guard poisoned")?;
    let rig = guard
        .as_mut()
        .and_then(|g| g.downcast_mut::<Rig>())
        .ok_or("not a TPM token")?;
    f(rig)
}
