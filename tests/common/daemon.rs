//! A real `hsm-signer serve` on a test's own token, its socket in the test's directory,
//! and calls to it through curl (an HTTP client this project did not write).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use openssl::x509::X509;

use super::fixtures::{import_cmd, secret_file, write_p12, Ca, KeySpec, Leaf};
use super::{run_ok, Result, TestToken};

/// One key to put on the token and configure.
pub struct KeySetup {
    /// The name callers use.
    pub name: &'static str,
    /// CKA_LABEL.
    pub label: &'static str,
    /// What kind of key.
    pub spec: KeySpec,
    /// `algorithms = [...]`.
    pub algorithms: &'static [&'static str],
    /// Extra TOML lines for this key (`allowed_uids = [...]`).
    pub extra: &'static str,
}

impl KeySetup {
    /// An RSA-2048 key for RS256 only: the ePUAP key as GSKO uses it.
    pub const fn rs256(name: &'static str, label: &'static str) -> Self {
        Self {
            name,
            label,
            spec: KeySpec::Rsa(2048),
            algorithms: &["RS256"],
            extra: "",
        }
    }
}

/// The ePUAP key as GSKO uses it: RSA-2048, RS256 only.
pub const EPUAP: KeySetup = KeySetup::rs256("epuap", "gsko-epuap");

/// The ePUAP key with every RSA algorithm the daemon offers.
pub const EPUAP_EVERY_RSA: KeySetup = KeySetup {
    algorithms: &["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"],
    ..EPUAP
};

/// Węzeł Krajowy's signing key: EC P-256, ES256.
pub const WK: KeySetup = KeySetup {
    name: "wk",
    label: "gsko-wk",
    spec: KeySpec::P256,
    algorithms: &["ES256"],
    extra: "",
};

/// Węzeł Krajowy's signing key beside its decryption key ([`WK_ENC`]).
pub const WK_SIGN: KeySetup = KeySetup {
    name: "wk-sign",
    label: "gsko-wk-sign",
    ..WK
};

/// Węzeł Krajowy's decryption key: EC P-256, `purpose = "decrypt"`, no algorithms.
pub const WK_ENC: KeySetup = KeySetup {
    name: "wk-enc",
    label: "gsko-wk-enc",
    spec: KeySpec::P256,
    algorithms: &[],
    extra: "purpose = \"decrypt\"",
};

/// Imports a fresh key (with its own CA) for each setup; returns them in order.
pub fn provision(token: &TestToken, keys: &[KeySetup]) -> Result<Vec<Leaf>> {
    let ca = Ca::sigillum()?;
    let password = secret_file(token.dir.path(), "p12-password", "hasło")?;
    let mut out = Vec::new();
    for key in keys {
        let leaf = ca.leaf(key.spec)?;
        let p12 = token.path(&format!("{}.p12", key.label));
        write_p12(&p12, &leaf, &ca, key.label, "hasło")?;
        run_ok(&mut import_cmd(token, &p12, &password))?;
        out.push(leaf);
    }
    Ok(out)
}

/// A running daemon, stopped (SIGTERM) when dropped.
pub struct Daemon {
    child: Option<Child>,
    /// Its socket.
    pub socket: PathBuf,
    /// Its configuration file.
    pub config: PathBuf,
    /// Its audit log.
    pub audit: PathBuf,
    /// Where its standard error goes.
    pub log: PathBuf,
}

impl Daemon {
    /// Writes a configuration for `keys` on `token` (its module, whatever its family) (plus `server_extra` lines under
    /// `[server]`) and starts the daemon, waiting until the socket answers.
    pub fn start(token: &TestToken, keys: &[KeySetup], server_extra: &str) -> Result<Self> {
        let config = Self::write_config(token, keys, server_extra)?;
        Self::start_with(token, config)
    }

    /// The configuration text `start` would write.
    pub fn config_text(token: &TestToken, keys: &[KeySetup], server_extra: &str) -> String {
        let mut text = format!(
            "[token]\nmodule = \"{}\"\ntoken = \"{}\"\npin_file = \"{}\"\nsessions = 2\n\n[server]\nsocket = \"{}\"\nsocket_mode = \"0660\"\n{server_extra}\n\n[audit]\nfile = \"{}\"\n\n[health]\ninterval_seconds = 1\n",
            token.module.display(),
            token.label,
            token.pin_file.display(),
            token.path("hsm-signer.sock").display(),
            token.path("audit.jsonl").display(),
        );
        for key in keys {
            let algorithms: Vec<String> =
                key.algorithms.iter().map(|a| format!("\"{a}\"")).collect();
            text.push_str(&format!(
                "\n[[keys]]\nname = \"{}\"\nlabel = \"{}\"\nalgorithms = [{}]\n{}\n",
                key.name,
                key.label,
                algorithms.join(", "),
                key.extra
            ));
        }
        text
    }

    fn write_config(token: &TestToken, keys: &[KeySetup], server_extra: &str) -> Result<PathBuf> {
        let path = token.path("config.toml");
        std::fs::write(&path, Self::config_text(token, keys, server_extra))?;
        Ok(path)
    }

    /// Starts the daemon on an existing configuration file.
    pub fn start_with(token: &TestToken, config: PathBuf) -> Result<Self> {
        Self::start_with_env(token, config, &[])
    }

    /// Starts the daemon on an existing configuration file with extra environment
    /// variables (e.g. P11_KIT_SERVER_ADDRESS for p11-kit-client.so).
    pub fn start_with_env(
        token: &TestToken,
        config: PathBuf,
        env: &[(&str, &str)],
    ) -> Result<Self> {
        let mut cmd = token.hsm_signer();
        cmd.envs(env.iter().copied());
        Self::start_command(cmd, token.dir.path(), config)
    }

    /// Starts `hsm-signer` (`cmd`, with its environment set) as `-v serve --config
    /// CONFIG`; its socket, audit log and log are `hsm-signer.sock`, `audit.jsonl` and
    /// `serve.log` in `dir`. For tokens of any family.
    pub fn start_command(mut cmd: Command, dir: &std::path::Path, config: PathBuf) -> Result<Self> {
        let log = dir.join("serve.log");
        let socket = dir.join("hsm-signer.sock");
        let child = cmd
            .args(["-v", "serve", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()?;
        let mut daemon = Self {
            child: Some(child),
            socket,
            config,
            audit: dir.join("audit.jsonl"),
            log,
        };
        daemon.wait_ready(Duration::from_secs(10))?;
        Ok(daemon)
    }

    fn wait_ready(&mut self, limit: Duration) -> Result {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                return Ok(());
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                return Err(format!("serve exited with {status}: {}", self.log_text()).into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Err(format!("serve not ready in {limit:?}: {}", self.log_text()).into())
    }

    /// The daemon's standard error so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Sends `signal` to the daemon.
    pub fn signal(&self, signal: &str) -> Result {
        run_ok(Command::new("kill").args([&format!("-{signal}"), &self.pid().to_string()]))?;
        Ok(())
    }

    /// SIGTERM, and waits for the exit status (at most 15 s).
    pub fn stop(mut self) -> Result<std::process::ExitStatus> {
        self.signal("TERM")?;
        let mut child = self.child.take().ok_or("already stopped")?;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                child.kill()?;
                return Err("serve did not stop within 15 s of SIGTERM".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `curl` against the socket: returns the status and the body.
    pub fn curl(&self, method: &str, path: &str, body: Option<&str>) -> Result<(u16, String)> {
        let (status, bytes) = self.curl_with(&[], method, path, body, &[])?;
        Ok((status, String::from_utf8(bytes)?))
    }

    /// `curl`, parsing the body as JSON.
    pub fn json(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<(u16, serde_json::Value)> {
        let (status, text) = self.curl(method, path, body)?;
        let value = serde_json::from_str(&text).map_err(|e| format!("{e}: {text:?}"))?;
        Ok((status, value))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Verifies `signature` over `data` with `cert`'s public key using the openssl CLI, an
/// implementation independent of the daemon. `dgst_args` selects hash and padding, e.g.
/// `["-sha256"]` or `["-sha256", "-sigopt", "rsa_padding_mode:pss", ...]`; ECDSA
/// signatures must be DER here.
pub fn openssl_verify(
    dir: &std::path::Path,
    cert: &X509,
    data: &[u8],
    signature: &[u8],
    dgst_args: &[&str],
) -> Result<bool> {
    let stem = format!("v{}", std::process::id() ^ rand_u32());
    let (pubkey, data_file, sig_file) = (
        dir.join(format!("{stem}.pub")),
        dir.join(format!("{stem}.data")),
        dir.join(format!("{stem}.sig")),
    );
    std::fs::write(&pubkey, cert.public_key()?.public_key_to_pem()?)?;
    std::fs::write(&data_file, data)?;
    std::fs::write(&sig_file, signature)?;
    let out = Command::new("openssl")
        .arg("dgst")
        .args(dgst_args)
        .arg("-verify")
        .arg(&pubkey)
        .arg("-signature")
        .arg(&sig_file)
        .arg(&data_file)
        .output()?;
    let mut text = String::new();
    out.stdout.as_slice().read_to_string(&mut text)?;
    Ok(out.status.success() && text.contains("Verified OK"))
}

fn rand_u32() -> u32 {
    let mut b = [0u8; 4];
    openssl::rand::rand_bytes(&mut b).expect("rng");
    u32::from_ne_bytes(b)
}

/// Like [`provision`], and also returns the CA that issued every leaf, to compare the
/// chain the daemon serves with what was imported.
pub fn provision_with_ca(token: &TestToken, keys: &[KeySetup]) -> Result<(Ca, Vec<Leaf>)> {
    let ca = Ca::sigillum()?;
    let password = secret_file(token.dir.path(), "p12-password", "hasło")?;
    let mut out = Vec::new();
    for key in keys {
        let leaf = ca.leaf(key.spec)?;
        let p12 = token.path(&format!("{}.p12", key.label));
        write_p12(&p12, &leaf, &ca, key.label, "hasło")?;
        run_ok(&mut import_cmd(token, &p12, &password))?;
        out.push(leaf);
    }
    Ok((ca, out))
}

/// Polls `check` every 20 ms until it says true, failing with `what` after `limit`.
pub fn wait_until(limit: Duration, what: &str, mut check: impl FnMut() -> Result<bool>) -> Result {
    let deadline = Instant::now() + limit;
    loop {
        if check()? {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("timed out after {limit:?} waiting for {what}").into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The non-empty lines of `path` once there are at least `count` of them: the audit
/// writer is a thread of its own, so lines land shortly after the answers.
pub fn wait_for_lines(path: &std::path::Path, count: usize) -> Result<Vec<String>> {
    let read = || -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    };
    wait_until(
        Duration::from_secs(10),
        &format!("{count} lines in {path:?}"),
        || Ok(read().len() >= count),
    )?;
    Ok(read())
}

/// One HTTP exchange written by hand on a fresh connection to `socket`: sends `request`
/// as is, then reads until the daemon closes or `timeout` passes. A write the daemon
/// refuses midway (it may close first) is not an error; what was read is returned.
pub fn raw_http(socket: &std::path::Path, request: &[u8], timeout: Duration) -> Result<Vec<u8>> {
    use std::io::Write;
    let mut stream = std::os::unix::net::UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(timeout))?;
    let _ = stream.write_all(request);
    let mut answer = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(answer)
}

/// The status code and body of a raw HTTP/1.1 answer (`Connection: close`, no chunking).
pub fn parse_http(answer: &[u8]) -> Result<(u16, Vec<u8>)> {
    let text_end = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("no header end in {:?}", String::from_utf8_lossy(answer)))?;
    let head = std::str::from_utf8(&answer[..text_end])?;
    let status = head
        .split_whitespace()
        .nth(1)
        .ok_or("no status line")?
        .parse()?;
    Ok((status, answer[text_end + 4..].to_vec()))
}

/// A POST of `body` (JSON) to `path`, written by hand, closing after the answer.
pub fn raw_post(path: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: hsm-signer\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Runs `hsm-signer -v serve --config CONFIG`, expecting it to exit by itself within
/// 15 s; returns its exit status and standard error.
pub fn serve_once(
    token: &TestToken,
    config: &std::path::Path,
) -> Result<(std::process::ExitStatus, String)> {
    let log = token.path("serve-once.log");
    let mut child = token
        .hsm_signer()
        .args(["-v", "serve", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok((status, std::fs::read_to_string(&log)?));
        }
        if Instant::now() > deadline {
            child.kill()?;
            child.wait()?;
            return Err(format!(
                "serve kept running; log: {}",
                std::fs::read_to_string(&log)?
            )
            .into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Daemon {
    /// Lets every local uid reach the socket: the test directory 0711 and the socket 0666.
    /// Tests only: the configuration refuses world bits, so other uids cannot connect
    /// otherwise. The daemon still checks every peer's uid.
    pub fn open_socket_to_everyone(&self) -> Result {
        use std::os::unix::fs::PermissionsExt;
        let dir = self.socket.parent().ok_or("socket has no directory")?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))?;
        std::fs::set_permissions(&self.socket, std::fs::Permissions::from_mode(0o666))?;
        Ok(())
    }

    /// `curl` run through `wrapper` (e.g. `setpriv --reuid=65534 ...`, or nothing) with
    /// `extra` arguments; returns the status and the body's bytes.
    pub fn curl_with(
        &self,
        wrapper: &[&str],
        method: &str,
        path: &str,
        body: Option<&str>,
        extra: &[&str],
    ) -> Result<(u16, Vec<u8>)> {
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg("curl");
                cmd
            }
            None => Command::new("curl"),
        };
        cmd.args(["-sS", "--max-time", "20", "-o", "-", "-w", "\n%{http_code}"])
            .args(["-X", method, "--unix-socket"])
            .arg(&self.socket)
            .args(extra)
            .arg(format!("http://localhost{path}"));
        if let Some(body) = body {
            cmd.args([
                "-H",
                "Content-Type: application/json",
                "--data-binary",
                body,
            ]);
        }
        let out = run_ok(&mut cmd)?;
        let split = out
            .stdout
            .iter()
            .rposition(|b| *b == b'\n')
            .ok_or("no status from curl")?;
        let code = std::str::from_utf8(&out.stdout[split + 1..])?
            .trim()
            .parse()?;
        Ok((code, out.stdout[..split].to_vec()))
    }

    /// [`Daemon::json`] as uid `uid` (and gid `uid`, no supplementary groups).
    pub fn json_as(
        &self,
        uid: u32,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<(u16, serde_json::Value)> {
        let (reuid, regid) = (format!("--reuid={uid}"), format!("--regid={uid}"));
        let wrapper = ["setpriv", &reuid, &regid, "--clear-groups"];
        let (status, bytes) = self.curl_with(&wrapper, method, path, body, &[])?;
        let value = serde_json::from_slice(&bytes)
            .map_err(|e| format!("{e}: {:?}", String::from_utf8_lossy(&bytes)))?;
        Ok((status, value))
    }

    /// Waits (at most `limit`) for the daemon to exit on its own.
    pub fn wait_exit(mut self, limit: Duration) -> Result<std::process::ExitStatus> {
        let mut child = self.child.take().ok_or("already stopped")?;
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                child.kill()?;
                child.wait()?;
                return Err(format!("serve still running after {limit:?}").into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Daemon {
    /// Starts `hsm-signer ARGS serve --config CONFIG` through `wrapper` (e.g. `setpriv
    /// --bounding-set=-all`), which must exec it in place so the pid is the daemon's.
    pub fn start_wrapped(
        token: &TestToken,
        config: PathBuf,
        wrapper: &[&str],
        args: &[&str],
    ) -> Result<Self> {
        let inner = token.hsm_signer();
        let (program, wrapper_args) = wrapper.split_first().ok_or("empty wrapper")?;
        let mut cmd = Command::new(program);
        cmd.args(wrapper_args).arg(inner.get_program());
        for (key, value) in inner.get_envs() {
            match value {
                Some(value) => cmd.env(key, value),
                None => cmd.env_remove(key),
            };
        }
        let log = token.path("serve.log");
        let child = cmd
            .args(args)
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()?;
        let mut daemon = Self {
            child: Some(child),
            socket: token.path("hsm-signer.sock"),
            config,
            audit: token.path("audit.jsonl"),
            log,
        };
        daemon.wait_ready(Duration::from_secs(10))?;
        Ok(daemon)
    }
}

/// The JSON body of a signing request: `field` ("data" or "digest") carries `bytes`.
pub fn sign_body(algorithm: &str, field: &str, bytes: &[u8]) -> String {
    use base64::Engine;
    let mut body = serde_json::json!({ "algorithm": algorithm });
    body[field] = base64::engine::general_purpose::STANDARD
        .encode(bytes)
        .into();
    body.to_string()
}

/// The signature bytes in a signing answer.
pub fn signature_of(answer: &serde_json::Value) -> Result<Vec<u8>> {
    use base64::Engine;
    let text = answer["signature"]
        .as_str()
        .ok_or_else(|| format!("no signature in {answer}"))?;
    Ok(base64::engine::general_purpose::STANDARD.decode(text)?)
}

/// A raw `r || s` ECDSA signature as the DER `ECDSA-Sig-Value` OpenSSL verifies.
pub fn raw_to_der(raw: &[u8]) -> Result<Vec<u8>> {
    use openssl::bn::BigNum;
    let (r, s) = raw.split_at(raw.len() / 2);
    let sig = openssl::ecdsa::EcdsaSig::from_private_components(
        BigNum::from_slice(r)?,
        BigNum::from_slice(s)?,
    )?;
    Ok(sig.to_der()?)
}

/// Like [`provision`], with extra `hsm-signer import` arguments for each key (e.g.
/// `--allow-derive` for a WK decrypt key); `args[i]` goes with `keys[i]`.
pub fn provision_with_args(
    token: &TestToken,
    keys: &[KeySetup],
    args: &[&[&str]],
) -> Result<Vec<Leaf>> {
    let ca = Ca::sigillum()?;
    let password = secret_file(token.dir.path(), "p12-password", "hasło")?;
    let mut out = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let leaf = ca.leaf(key.spec)?;
        let p12 = token.path(&format!("{}.p12", key.label));
        write_p12(&p12, &leaf, &ca, key.label, "hasło")?;
        let extra = args.get(i).copied().unwrap_or_default();
        run_ok(import_cmd(token, &p12, &password).args(extra))?;
        out.push(leaf);
    }
    Ok(out)
}

/// Headers by name (lower case, without `x-hsm-signer-`), and the Content-Type as
/// `(content-type)`.
pub type Headers = Vec<(String, String)>;

/// POSTs `document` as `application/xml` with curl; the status, the body and the
/// `x-hsm-signer-*` headers.
pub fn post_raw(
    daemon: &Daemon,
    dir: &Path,
    path: &str,
    document: &str,
) -> Result<(u16, String, Headers)> {
    let input = dir.join("raw-input.xml");
    std::fs::write(&input, document)?;
    let headers = dir.join("raw-headers.txt");
    let (status, body) = daemon.curl_with(
        &[],
        "POST",
        path,
        None,
        &[
            "-H",
            "Content-Type: application/xml",
            "--data-binary",
            &format!("@{}", input.display()),
            "-D",
            &headers.display().to_string(),
        ],
    )?;
    let mut ours = Vec::new();
    for line in std::fs::read_to_string(&headers)?.lines() {
        if let Some((name, value)) = line.split_once(':') {
            let name = name.trim().to_ascii_lowercase();
            if let Some(name) = name.strip_prefix("x-hsm-signer-") {
                ours.push((name.to_string(), value.trim().to_string()));
            }
            if name == "content-type" {
                ours.push(("(content-type)".into(), value.trim().to_string()));
            }
        }
    }
    Ok((status, String::from_utf8(body)?, ours))
}

/// The value of header `name` in `headers` (as [`post_raw`] names them).
pub fn header<'a>(headers: &'a Headers, name: &str) -> Result<&'a str> {
    Ok(headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .ok_or_else(|| format!("no {name} header in {headers:?}"))?)
}
