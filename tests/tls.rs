//! A GSKO on another host: the TCP listener with mutual TLS, pinned clients known by name
//! in the policy and the audit log, checked with curl and `openssl s_client`, tools this
//! project did not write. The Unix socket keeps serving beside it.

use crate::common;
mod flood;
mod identity;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::daemon::*;
use common::fixtures::*;
use common::*;
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;
use serde_json::Value;

const EPUAP: KeySetup = KeySetup {
    extra: "allowed_clients = [\"gsko-web1\"]",
    ..crate::common::daemon::EPUAP
};

const DATA: &[u8] = b"<ds:SignedInfo>tpUserInfo from gsko-web1</ds:SignedInfo>";

/// The files of one TLS identity.
struct Identity {
    cert: PathBuf,
    key: PathBuf,
    sha256: String,
}

fn write_identity(dir: &Path, name: &str, cert: &X509, key: &PKey<Private>) -> Result<Identity> {
    let cert_path = dir.join(format!("{name}.pem"));
    let key_path = dir.join(format!("{name}.key"));
    std::fs::write(&cert_path, cert.to_pem()?)?;
    write_secret(
        &key_path,
        std::str::from_utf8(&key.private_key_to_pem_pkcs8()?)?,
    )?;
    Ok(Identity {
        cert: cert_path,
        key: key_path,
        sha256: hex::encode(openssl::sha::sha256(&cert.to_der()?)),
    })
}

/// Everything one test needs: a server certificate for localhost, a client CA with three
/// clients (two pinned, one not), and a rogue CA that issues a "gsko-web1" of its own.
struct Pki {
    server: Identity,
    server_ca: PathBuf,
    client_ca: PathBuf,
    web1: Identity,
    web2: Identity,
    unpinned: Identity,
    rogue: Identity,
    /// The client CA, to issue more clients and sign CRLs.
    ca: Ca,
    /// Its key, PEM, for the CRLs made with python's `cryptography`.
    ca_key: PathBuf,
}

fn pki(dir: &Path) -> Result<Pki> {
    // The server: a P-256 certificate for localhost and 127.0.0.1 from a CA of its own,
    // made with the openssl CLI as docs/remote.md shows.
    let server = dir.join("server");
    let openssl = |args: &[&str]| -> Result {
        let out = Command::new("openssl")
            .current_dir(dir)
            .args(args)
            .output()?;
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=GSKO Server CA",
        "-keyout",
        "server-ca.key",
        "-out",
        "server-ca.pem",
    ])?;
    openssl(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-addext",
        "subjectAltName=DNS:localhost,IP:127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ])?;
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "server-ca.pem",
        "-CAkey",
        "server-ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-copy_extensions",
        "copy",
        "-out",
        "server.pem",
    ])?;
    std::fs::set_permissions(
        server.with_extension("key"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )?;
    let ca = Ca::named("GSKO Client CA")?;
    let client_ca = dir.join("client-ca.pem");
    std::fs::write(&client_ca, ca.cert.to_pem()?)?;
    let client = |name: &str, issuer: &Ca| -> Result<Identity> {
        let key = KeySpec::P256.generate()?;
        let cert = issuer.issue(&key, name)?;
        write_identity(dir, name, &cert, &key)
    };
    let ca_key = dir.join("client-ca.key");
    write_secret(
        &ca_key,
        std::str::from_utf8(&ca.key.private_key_to_pem_pkcs8()?)?,
    )?;
    let rogue_ca = Ca::named("GSKO Client CA")?;
    let rogue = {
        let key = KeySpec::P256.generate()?;
        let cert = rogue_ca.issue(&key, "gsko-web1")?;
        write_identity(dir, "rogue-gsko-web1", &cert, &key)?
    };
    Ok(Pki {
        server: Identity {
            cert: server.with_extension("pem"),
            key: server.with_extension("key"),
            sha256: String::new(),
        },
        server_ca: dir.join("server-ca.pem"),
        client_ca,
        web1: client("gsko-web1", &ca)?,
        web2: client("gsko-web2", &ca)?,
        unpinned: client("gsko-unpinned", &ca)?,
        rogue,
        ca,
        ca_key,
    })
}

/// Starts a daemon with the TLS listener on a free port; returns it and the port.
fn start(token: &TestToken, pki: &Pki, extra_tls: &str) -> Result<(Daemon, u16)> {
    start_keys(token, pki, &[EPUAP], "", extra_tls)
}

/// [`start`] with these keys, and `extra_server` lines under `[server]`.
fn start_keys(
    token: &TestToken,
    pki: &Pki,
    keys: &[KeySetup],
    extra_server: &str,
    extra_tls: &str,
) -> Result<(Daemon, u16)> {
    let tls = format!(
        "{extra_server}\n[server.tls]\nlisten = \"127.0.0.1:0\"\ncert_file = \"{}\"\nkey_file = \"{}\"\nclient_ca_file = \"{}\"\n{extra_tls}\n",
        pki.server.cert.display(),
        pki.server.key.display(),
        pki.client_ca.display()
    );
    let mut text = Daemon::config_text(token, keys, &tls);
    text.push_str(&format!(
        "\n[[clients]]\nname = \"gsko-web1\"\ncertificate_sha256 = \"{}\"\n\n[[clients]]\nname = \"gsko-web2\"\ncertificate_sha256 = \"{}\"\n",
        pki.web1.sha256, pki.web2.sha256
    ));
    let config = token.path("config.toml");
    std::fs::write(&config, text)?;
    let daemon = Daemon::start_with(token, config)?;
    let port = tls_port(&daemon)?;
    Ok((daemon, port))
}

/// The port the daemon's TLS listener took (`listen = "127.0.0.1:0"`), from its log.
fn tls_port(daemon: &Daemon) -> Result<u16> {
    let mut port = None;
    wait_until(Duration::from_secs(5), "the TLS listener", || {
        port = daemon
            .log_text()
            .lines()
            .find(|l| l.contains("TLS listener ready"))
            .and_then(|l| l.split("address=127.0.0.1:").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|p| p.parse::<u16>().ok());
        Ok(port.is_some())
    })?;
    Ok(port.ok_or("no port")?)
}

/// curl over mutual TLS as `client` (None: no client certificate).
fn curl_tls(
    pki: &Pki,
    port: u16,
    client: Option<&Identity>,
    path: &str,
    body: Option<&str>,
) -> Result<Output> {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "10", "-w", "\n%{http_code}"])
        .arg("--cacert")
        .arg(&pki.server_ca);
    if let Some(client) = client {
        cmd.arg("--cert")
            .arg(&client.cert)
            .arg("--key")
            .arg(&client.key);
    }
    if let Some(body) = body {
        cmd.args([
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            body,
        ]);
    }
    cmd.arg(format!("https://localhost:{port}{path}"));
    Ok(cmd.output()?)
}

/// Status and JSON body of a curl that got an HTTP answer.
fn answer(out: &Output) -> Result<(u16, Value)> {
    let text = String::from_utf8(out.stdout.clone())?;
    let (body, status) = text.rsplit_once('\n').ok_or("no status line")?;
    let value = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(body).map_err(|e| format!("{e}: {body:?}"))?
    };
    Ok((status.parse()?, value))
}

fn sign_body_data() -> String {
    sign_body("RS256", "data", DATA)
}

#[test]
fn a_pinned_client_signs_over_mutual_tls_and_everyone_else_is_refused() -> Result {
    let token = TestToken::new()?;
    let leaves = provision(&token, &[EPUAP])?;
    let pki = pki(token.dir.path())?;
    let (daemon, port) = start(&token, &pki, "")?;
    let body = sign_body_data();

    // gsko-web1: pinned and allowed for the key; its signature verifies with openssl.
    let out = curl_tls(
        &pki,
        port,
        Some(&pki.web1),
        "/v1/keys/epuap/sign",
        Some(&body),
    )?;
    let (status, signed) = answer(&out)?;
    assert_eq!(
        status,
        200,
        "{signed} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let signature = signature_of(&signed)?;
    assert!(openssl_verify(
        token.dir.path(),
        &leaves[0].cert,
        DATA,
        &signature,
        &["-sha256"]
    )?);

    // No client certificate: the handshake ends, no HTTP answer at all.
    let out = curl_tls(&pki, port, None, "/v1/keys/epuap/sign", Some(&body))?;
    assert!(!out.status.success(), "signed without a certificate");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("signature"));

    // A "gsko-web1" from another CA: the handshake ends too.
    let out = curl_tls(
        &pki,
        port,
        Some(&pki.rogue),
        "/v1/keys/epuap/sign",
        Some(&body),
    )?;
    assert!(
        !out.status.success(),
        "a rogue CA's certificate was accepted"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("signature"));

    // A valid chain that is not pinned: 403, not a known client.
    let out = curl_tls(
        &pki,
        port,
        Some(&pki.unpinned),
        "/v1/keys/epuap/sign",
        Some(&body),
    )?;
    let (status, refused) = answer(&out)?;
    assert_eq!(status, 403, "{refused}");
    assert!(refused["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("not pinned"));

    // gsko-web2: pinned, but the key allows only gsko-web1.
    let out = curl_tls(
        &pki,
        port,
        Some(&pki.web2),
        "/v1/keys/epuap/sign",
        Some(&body),
    )?;
    let (status, refused) = answer(&out)?;
    assert_eq!(status, 403, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("gsko-web2"),
        "{refused}"
    );
    // ... and sees no key in the list.
    let out = curl_tls(&pki, port, Some(&pki.web2), "/v1/keys", None)?;
    let (status, list) = answer(&out)?;
    assert_eq!(
        (status, list["keys"].as_array().map(Vec::len)),
        (200, Some(0)),
        "{list}"
    );

    // The Unix socket serves beside the listener, but a key whose rule names only
    // allowed_clients serves no local caller (deny by default across transports).
    let (status, local) = daemon.json("POST", "/v1/keys/epuap/sign", Some(&body))?;
    assert_eq!(status, 403, "{local}");

    // The audit log names the client, as it names the uid for the socket.
    // web1 signed, the unpinned refusal, web2 refused on the key, the local refusal.
    let lines = wait_for_lines(&daemon.audit, 4)?;
    let records: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l))
        .collect::<std::result::Result<_, _>>()?;
    let by_client = |name: &str| {
        records
            .iter()
            .filter(|r| r["client"] == name)
            .cloned()
            .collect::<Vec<_>>()
    };
    let web1 = by_client("gsko-web1");
    assert_eq!(web1.len(), 1, "{records:?}");
    assert_eq!(
        (&web1[0]["outcome"], &web1[0]["status"]),
        (&Value::from("ok"), &Value::from(200))
    );
    assert!(web1[0].get("uid").is_none());
    let web2 = by_client("gsko-web2");
    assert_eq!(web2[0]["outcome"], "forbidden", "{web2:?}");
    let unpinned = records
        .iter()
        .find(|r| r["op"] == "refused_peer")
        .ok_or("no refused_peer record")?;
    assert!(
        unpinned["client"]
            .as_str()
            .unwrap_or("")
            .starts_with("sha256:"),
        "{unpinned}"
    );
    assert!(records
        .iter()
        .any(|r| r["uid"] == 0 && r["outcome"] == "forbidden"));
    Ok(())
}

/// Four keys, one per rule shape: clients only, uids only, no one named, both.
const TLS_ONLY: KeySetup = KeySetup {
    extra: "allowed_clients = [\"gsko-web1\"]",
    ..KeySetup::rs256("tls-only", "k-tls-only")
};
const LOCAL_ONLY: KeySetup = KeySetup {
    extra: "allowed_uids = [0]",
    ..KeySetup::rs256("local-only", "k-local-only")
};
const OPEN: KeySetup = KeySetup::rs256("open", "k-open");
const BOTH: KeySetup = KeySetup {
    extra: "allowed_uids = [0]\nallowed_clients = [\"gsko-web2\"]",
    ..KeySetup::rs256("both", "k-both")
};

#[test]
fn keys_are_denied_by_default_across_transports() -> Result {
    let token = TestToken::new()?;
    let keys = [TLS_ONLY, LOCAL_ONLY, OPEN, BOTH];
    let leaves = provision(&token, &keys)?;
    let pki = pki(token.dir.path())?;
    let (daemon, port) = start_keys(&token, &pki, &keys, "", "")?;
    let body = sign_body_data();
    // Who may use which key; the daemon runs the test as uid 0.
    let expected: [(&str, [bool; 4]); 3] = [
        ("local uid 0", [false, true, true, true]),
        ("gsko-web1", [true, false, false, false]),
        ("gsko-web2", [false, false, false, true]),
    ];
    for (caller, allowed) in expected {
        let call = |path: &str, body: Option<&str>| -> Result<(u16, Value)> {
            match caller {
                "gsko-web1" => answer(&curl_tls(&pki, port, Some(&pki.web1), path, body)?),
                "gsko-web2" => answer(&curl_tls(&pki, port, Some(&pki.web2), path, body)?),
                _ => daemon.json(if body.is_some() { "POST" } else { "GET" }, path, body),
            }
        };
        let (status, list) = call("/v1/keys", None)?;
        assert_eq!(status, 200, "{caller}: {list}");
        let listed: Vec<&str> = list["keys"]
            .as_array()
            .ok_or("no keys array")?
            .iter()
            .filter_map(|k| k["name"].as_str())
            .collect();
        let wanted: Vec<&str> = keys
            .iter()
            .zip(allowed)
            .filter(|(_, a)| *a)
            .map(|(k, _)| k.name)
            .collect();
        assert_eq!(listed, wanted, "{caller}: GET /v1/keys");
        for ((key, leaf), may) in keys.iter().zip(&leaves).zip(allowed) {
            let (status, answer) = call(&format!("/v1/keys/{}/sign", key.name), Some(&body))?;
            if may {
                assert_eq!(status, 200, "{caller} on {}: {answer}", key.name);
                assert!(openssl_verify(
                    token.dir.path(),
                    &leaf.cert,
                    DATA,
                    &signature_of(&answer)?,
                    &["-sha256"]
                )?);
            } else {
                assert_eq!(status, 403, "{caller} on {}: {answer}", key.name);
            }
        }
    }
    // One warning per key that serves no TLS client, at start and again on reload.
    let warned = |key: &str| {
        daemon
            .log_text()
            .matches(&format!("key {key:?} serves no TLS client"))
            .count()
    };
    assert_eq!(
        [
            warned("tls-only"),
            warned("local-only"),
            warned("open"),
            warned("both")
        ],
        [0, 1, 1, 0],
        "{}",
        daemon.log_text()
    );
    daemon.signal("HUP")?;
    wait_until(Duration::from_secs(10), "the reload", || {
        Ok(daemon.log_text().contains("configuration reloaded"))
    })?;
    assert_eq!([warned("local-only"), warned("open")], [2, 2]);
    Ok(())
}

#[test]
fn tls_1_1_is_refused_and_1_2_and_1_3_are_offered() -> Result {
    let token = TestToken::new()?;
    provision(&token, &[EPUAP])?;
    let pki = pki(token.dir.path())?;
    let (_daemon, port) = start(&token, &pki, "")?;
    let s_client =
        |version: &str| -> Result<String> {
            let mut child = Command::new("openssl")
                .args([
                    "s_client",
                    "-connect",
                    &format!("127.0.0.1:{port}"),
                    version,
                ])
                .args(["-cipher", "DEFAULT@SECLEVEL=0"])
                .arg("-cert")
                .arg(&pki.web1.cert)
                .arg("-key")
                .arg(&pki.web1.key)
                .arg("-CAfile")
                .arg(&pki.server_ca)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()?;
            child.stdin.take().ok_or("stdin")?.write_all(b"Q\n")?;
            let out = child.wait_with_output()?;
            Ok(String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr))
        };
    // Offered TLS 1.1 only, the client gets no session: an alert and no cipher.
    let old = s_client("-tls1_1")?;
    assert!(old.contains("Cipher is (NONE)"), "{old}");
    assert!(
        old.contains("no peer certificate available") && old.contains("alert"),
        "{old}"
    );
    for (flag, name) in [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")] {
        let out = s_client(flag)?;
        assert!(
            out.contains(&format!("New, {name}, Cipher is ")),
            "{flag}: {out}"
        );
        assert!(out.contains("Verify return code: 0 (ok)"), "{out}");
    }
    Ok(())
}

#[test]
fn a_reload_that_unpins_a_client_refuses_it_at_once() -> Result {
    let token = TestToken::new()?;
    provision(&token, &[EPUAP])?;
    let pki = pki(token.dir.path())?;
    let (daemon, port) = start(&token, &pki, "")?;
    let body = sign_body_data();
    let (status, _) = answer(&curl_tls(
        &pki,
        port,
        Some(&pki.web1),
        "/v1/keys/epuap/sign",
        Some(&body),
    )?)?;
    assert_eq!(status, 200);
    // gsko-web1's pin replaced by gsko-unpinned's: web1's certificate is now unknown, and
    // the name "gsko-web1" (which the key allows) belongs to the other certificate.
    let text =
        std::fs::read_to_string(&daemon.config)?.replace(&pki.web1.sha256, &pki.unpinned.sha256);
    std::fs::write(&daemon.config, text)?;
    daemon.signal("HUP")?;
    wait_until(Duration::from_secs(10), "the reload", || {
        Ok(daemon.log_text().contains("configuration reloaded"))
    })?;
    let (status, refused) = answer(&curl_tls(
        &pki,
        port,
        Some(&pki.web1),
        "/v1/keys/epuap/sign",
        Some(&body),
    )?)?;
    assert_eq!(status, 403, "{refused}");
    let (status, signed) = answer(&curl_tls(
        &pki,
        port,
        Some(&pki.unpinned),
        "/v1/keys/epuap/sign",
        Some(&body),
    )?)?;
    assert_eq!(status, 200, "{signed}");
    Ok(())
}

#[test]
fn the_sign_and_sign_xml_commands_work_over_mutual_tls() -> Result {
    let token = TestToken::new()?;
    let leaves = provision(&token, &[EPUAP])?;
    let pki = pki(token.dir.path())?;
    let (_daemon, port) = start(&token, &pki, "")?;
    let url = format!("https://localhost:{port}");
    let tls_args = |cmd: &mut Command, client: &Identity| {
        cmd.args(["--url", &url])
            .arg("--tls-ca")
            .arg(&pki.server_ca)
            .arg("--tls-cert")
            .arg(&client.cert)
            .arg("--tls-key")
            .arg(&client.key);
    };
    let data = token.path("data.xml");
    std::fs::write(&data, DATA)?;
    let sig = token.path("data.sig");
    let mut cmd = token.hsm_signer();
    cmd.args(["sign", "--key", "epuap", "--algorithm", "RS256", "--in"])
        .arg(&data)
        .arg("--out")
        .arg(&sig);
    tls_args(&mut cmd, &pki.web1);
    run_ok(&mut cmd)?;
    assert!(openssl_verify(
        token.dir.path(),
        &leaves[0].cert,
        DATA,
        &std::fs::read(&sig)?,
        &["-sha256"]
    )?);
    // A tpUserInfo envelope signed over TLS verifies with xmlsec1.
    let envelope = token.path("envelope.xml");
    std::fs::write(
        &envelope,
        r#"<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:tpus="http://tpuserinfo.ws.epuap.gov.pl"><soapenv:Header/><soapenv:Body><tpus:zapytaniePKZalogowany><tpus:tgsid>abc</tpus:tgsid></tpus:zapytaniePKZalogowany></soapenv:Body></soapenv:Envelope>"#,
    )?;
    let signed = token.path("signed.xml");
    let mut cmd = token.hsm_signer();
    cmd.args(["sign-xml", "--key", "epuap", "--profile", "wss", "--in"])
        .arg(&envelope)
        .arg("--out")
        .arg(&signed);
    tls_args(&mut cmd, &pki.web1);
    run_ok(&mut cmd)?;
    let cert_pem = token.path("epuap.pem");
    std::fs::write(&cert_pem, leaves[0].cert.to_pem()?)?;
    let out = Command::new("xmlsec1")
        .args([
            "--verify",
            "--id-attr:Id",
            "http://schemas.xmlsoap.org/soap/envelope/:Body",
        ])
        .arg("--pubkey-cert-pem")
        .arg(&cert_pem)
        .arg(&signed)
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // bench daemon over TLS: every request a verified 200 from the daemon's point of view.
    let mut cmd = token.hsm_signer();
    cmd.args([
        "bench",
        "daemon",
        "--key",
        "epuap",
        "--clients",
        "2",
        "--seconds",
        "0.5",
    ]);
    tls_args(&mut cmd, &pki.web1);
    let bench: Value = serde_json::from_slice(&run_ok(&mut cmd)?.stdout)?;
    assert!(bench["ops"].as_u64().unwrap_or(0) > 0, "{bench}");
    assert_eq!(bench["errors"], 0, "{bench}");
    eprintln!(
        "bench over mutual TLS, 2 clients, RS256: {:.0}/s",
        bench["ops"].as_f64().unwrap_or(0.0) / bench["seconds"].as_f64().unwrap_or(1.0)
    );
    // gsko-web2 may not use the key: the command says so and fails.
    let mut cmd = token.hsm_signer();
    cmd.args(["sign", "--key", "epuap", "--algorithm", "RS256", "--in"])
        .arg(&data)
        .arg("--out")
        .arg(token.path("refused.sig"));
    tls_args(&mut cmd, &pki.web2);
    let err = run_fails(&mut cmd)?;
    assert!(err.contains("403") && err.contains("forbidden"), "{err}");
    Ok(())
}

/// Runs a documented block with bash in `dir`, as the host `localhost` on `port`.
fn run_doc_block(token: &TestToken, dir: &Path, block: &str, port: u16) -> Result<Output> {
    let script = block
        .replace("hsm.gmina.local:8443", &format!("localhost:{port}"))
        .replace("hsm.gmina.local", "localhost")
        .replace("10.0.0.5", "127.0.0.1");
    let bin = token.hsm_signer().get_program().to_os_string();
    let bin_dir = Path::new(&bin).parent().ok_or("binary dir")?.to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .current_dir(dir)
        .env("PATH", path)
        .output()?;
    assert!(
        out.status.success(),
        "{script}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(out)
}

#[test]
fn the_commands_of_docs_remote_md_make_working_certificates_and_calls() -> Result {
    // The Polish runbook shows the very same commands.
    for name in ["make-certificates", "curl-sign", "cli-sign"] {
        assert_eq!(
            doc_block("docs/remote.md", name)?,
            doc_block("docs/pl/remote.md", name)?,
            "docs/pl/remote.md's {name} block drifted from docs/remote.md"
        );
    }
    let token = TestToken::new()?;
    let leaves = provision(&token, &[EPUAP])?;
    let dir = token.path("doc");
    std::fs::create_dir(&dir)?;
    run_doc_block(
        &token,
        &dir,
        &doc_block("docs/remote.md", "make-certificates")?,
        0,
    )?;
    let pin = std::fs::read_to_string(dir.join("gsko-web1.sha256"))?;
    let tls = format!(
        "\n[server.tls]\nlisten = \"127.0.0.1:0\"\ncert_file = \"{}\"\nkey_file = \"{}\"\nclient_ca_file = \"{}\"\n",
        dir.join("server.pem").display(),
        dir.join("server.key").display(),
        dir.join("client-ca.pem").display()
    );
    let mut text = Daemon::config_text(&token, &[EPUAP], &tls);
    text.push_str(&format!(
        "\n[[clients]]\nname = \"gsko-web1\"\ncertificate_sha256 = \"{}\"\n",
        pin.trim()
    ));
    let config = token.path("config.toml");
    std::fs::write(&config, text)?;
    let daemon = Daemon::start_with(&token, config)?;
    let port = tls_port(&daemon)?;
    let out = run_doc_block(
        &token,
        &dir,
        &doc_block("docs/remote.md", "curl-sign")?,
        port,
    )?;
    let answer: Value = serde_json::from_slice(&out.stdout)?;
    let data = b"<SignedInfo/>";
    assert!(openssl_verify(
        token.dir.path(),
        &leaves[0].cert,
        data,
        &signature_of(&answer)?,
        &["-sha256"]
    )?);
    run_doc_block(
        &token,
        &dir,
        &doc_block("docs/remote.md", "cli-sign")?,
        port,
    )?;
    assert!(openssl_verify(
        token.dir.path(),
        &leaves[0].cert,
        &std::fs::read(dir.join("si.xml"))?,
        &std::fs::read(dir.join("si.sig"))?,
        &["-sha256"]
    )?);
    Ok(())
}

#[test]
fn php_python_and_java_examples_sign_over_mutual_tls() -> Result {
    let token = TestToken::new()?;
    let leaves = provision(&token, &[EPUAP])?;
    let pki = pki(token.dir.path())?;
    let (_daemon, port) = start(&token, &pki, "")?;
    let url = format!("https://localhost:{port}");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let envelope = repo.join("examples/xml/tpuserinfo.xml");
    let cert_pem = token.path("epuap.pem");
    std::fs::write(&cert_pem, leaves[0].cert.to_pem()?)?;
    let verify = |signed: &[u8], who: &str| -> Result {
        let file = token.path(&format!("signed-{who}.xml"));
        std::fs::write(&file, signed)?;
        let out = Command::new("xmlsec1")
            .args([
                "--verify",
                "--id-attr:Id",
                "http://schemas.xmlsoap.org/soap/envelope/:Body",
            ])
            .arg("--pubkey-cert-pem")
            .arg(&cert_pem)
            .arg(&file)
            .output()?;
        assert!(
            out.status.success(),
            "{who}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    };
    let files = |cmd: &mut Command| {
        cmd.arg(&url)
            .arg(&pki.server_ca)
            .arg(&pki.web1.cert)
            .arg(&pki.web1.key)
            .arg("epuap")
            .arg(&envelope);
    };
    let mut python = Command::new("python3");
    python.arg(repo.join("examples/python/mtls_wss.py"));
    files(&mut python);
    verify(&run_ok(&mut python)?.stdout, "python")?;
    let mut php = Command::new("php");
    php.arg(repo.join("examples/php/mtls_wss.php"));
    files(&mut php);
    verify(&run_ok(&mut php)?.stdout, "php")?;
    // Java: the client's key and certificate as a PKCS#12 keystore (an ASCII password:
    // the JDK refuses others for PKCS#12).
    let p12 = token.path("gsko-web1.p12");
    run_ok(
        Command::new("openssl")
            .args([
                "pkcs12",
                "-export",
                "-passout",
                "env:HSM_SIGNER_P12_PASSWORD",
            ])
            .env("HSM_SIGNER_P12_PASSWORD", "haslo-klienta")
            .arg("-in")
            .arg(&pki.web1.cert)
            .arg("-inkey")
            .arg(&pki.web1.key)
            .arg("-out")
            .arg(&p12),
    )?;
    let classes = token.path("classes");
    run_ok(
        Command::new("javac")
            .arg("-d")
            .arg(&classes)
            .arg(repo.join("examples/java/HsmSignerClient.java"))
            .arg(repo.join("examples/java/MtlsWss.java")),
    )?;
    let out = run_ok(
        Command::new("java")
            .arg("-cp")
            .arg(&classes)
            .arg("MtlsWss")
            .env("HSM_SIGNER_P12_PASSWORD", "haslo-klienta")
            .arg(&url)
            .arg(&pki.server_ca)
            .arg(&p12)
            .arg("epuap")
            .arg(&envelope),
    )?;
    verify(&out.stdout, "java")?;
    // A client the key does not allow: each example says so and exits 1.
    let mut python = Command::new("python3");
    python
        .arg(repo.join("examples/python/mtls_wss.py"))
        .arg(&url)
        .arg(&pki.server_ca)
        .arg(&pki.web2.cert)
        .arg(&pki.web2.key)
        .arg("epuap")
        .arg(&envelope);
    let err = run_fails(&mut python)?;
    assert!(err.contains("403 forbidden"), "{err}");
    Ok(())
}
