//! A TLS client's identity over the life of its connections: re-pinned, unpinned with
//! unreadable files, expired and revoked certificates cut off at the next request of a
//! connection already open; and a `[[clients]]` name that would pass for another identity.

use super::*;

/// One TLS connection kept open by a python client: each `request` sends the same
/// request on it and returns the status, the Connection header and the body.
struct KeptAlive {
    child: std::process::Child,
    out: std::io::BufReader<std::process::ChildStdout>,
}

const KEPT_ALIVE: &str = r#"
import json, socket, ssl, sys
port, ca, cert, key, path, body = sys.argv[1:7]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.load_verify_locations(ca)
ctx.load_cert_chain(cert, key)
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", int(port)), timeout=10), server_hostname="localhost")
f = s.makefile("rb")
req = ("POST %s HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (path, len(body), body)).encode()
for line in sys.stdin:
    if line.strip() == "eof":
        try:
            closed = f.read(1) == b""
        except (ssl.SSLError, OSError):
            closed = True
        print(json.dumps({"closed": closed}), flush=True)
        continue
    s.sendall(req)
    status = int(f.readline().split()[1])
    headers = {}
    while True:
        h = f.readline().strip()
        if not h:
            break
        k, v = h.decode().split(":", 1)
        headers[k.strip().lower()] = v.strip()
    data = f.read(int(headers.get("content-length", "0")))
    print(json.dumps({"status": status, "connection": headers.get("connection"), "body": data.decode()}), flush=True)
"#;

impl KeptAlive {
    fn open(pki: &Pki, port: u16, client: &Identity, path: &str, body: &str) -> Result<Self> {
        let mut child = Command::new("python3")
            .args(["-c", KEPT_ALIVE, &port.to_string()])
            .arg(&pki.server_ca)
            .arg(&client.cert)
            .arg(&client.key)
            .args([path, body])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        let out = std::io::BufReader::new(child.stdout.take().ok_or("stdout")?);
        Ok(Self { child, out })
    }

    fn ask(&mut self, line: &str) -> Result<Value> {
        use std::io::BufRead;
        let stdin = self.child.stdin.as_mut().ok_or("stdin")?;
        writeln!(stdin, "{line}")?;
        let mut answer = String::new();
        self.out.read_line(&mut answer)?;
        Ok(serde_json::from_str(&answer).map_err(|e| format!("{e}: {answer:?}"))?)
    }

    /// Status, Connection header and body of one more request on the connection.
    fn request(&mut self) -> Result<(u16, Option<String>, String)> {
        let v = self.ask("go")?;
        Ok((
            v["status"].as_u64().ok_or("no status")? as u16,
            v["connection"].as_str().map(str::to_owned),
            v["body"].as_str().unwrap_or("").to_owned(),
        ))
    }

    /// True when the daemon closed the connection.
    fn closed(&mut self) -> Result<bool> {
        Ok(self.ask("eof")?["closed"] == true)
    }
}

impl Drop for KeptAlive {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The one `refused_peer` record for `client` with a reason (a request refused on an
/// open connection), waiting for it to be written.
fn refused_on_open_connection(daemon: &Daemon, client: &str) -> Result<Value> {
    let mut found = None;
    wait_until(Duration::from_secs(5), "the refused_peer record", || {
        found = std::fs::read_to_string(&daemon.audit)?
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|r| {
                r["op"] == "refused_peer"
                    && r["client"] == client
                    && r["detail"]["reason"].is_string()
            });
        Ok(found.is_some())
    })?;
    Ok(found.ok_or("no record")?)
}

/// A reload that re-pins a client's name to another certificate: the old certificate's
/// open connection gets 403 at its next request and is closed, and the audit log says so.
#[test]
fn a_reload_that_repins_a_client_cuts_its_open_connections() -> Result {
    let token = TestToken::new()?;
    provision(&token, &[EPUAP])?;
    let pki = pki(token.dir.path())?;
    let (daemon, port) = start(&token, &pki, "")?;
    let body = sign_body_data();
    let mut web1 = KeptAlive::open(&pki, port, &pki.web1, "/v1/keys/epuap/sign", &body)?;
    let (status, _, signed) = web1.request()?;
    assert_eq!(status, 200, "{signed}");
    // "gsko-web1" (which the key allows) now names another certificate.
    let text =
        std::fs::read_to_string(&daemon.config)?.replace(&pki.web1.sha256, &pki.unpinned.sha256);
    std::fs::write(&daemon.config, text)?;
    daemon.signal("HUP")?;
    wait_until(Duration::from_secs(10), "the reload", || {
        Ok(daemon.log_text().contains("configuration reloaded"))
    })?;
    let (status, connection, refused) = web1.request()?;
    assert_eq!(status, 403, "{refused}");
    assert!(refused.contains("no longer pinned"), "{refused}");
    assert_eq!(connection.as_deref(), Some("close"));
    assert!(web1.closed()?, "the connection stayed open");
    let record = refused_on_open_connection(&daemon, "gsko-web1")?;
    assert_eq!(record["status"], 403, "{record}");
    // The certificate now pinned as gsko-web1 signs.
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

/// A reload whose TLS files cannot be read (here a `crl_file` that does not exist) keeps
/// the running certificates, but still applies the new pins: a re-pinned certificate's
/// open connection is cut off all the same.
#[test]
fn a_reload_whose_tls_files_fail_still_applies_the_new_pins() -> Result {
    let token = TestToken::new()?;
    provision(&token, &[EPUAP])?;
    let pki = pki(token.dir.path())?;
    let (daemon, port) = start(&token, &pki, "")?;
    let body = sign_body_data();
    let mut web1 = KeptAlive::open(&pki, port, &pki.web1, "/v1/keys/epuap/sign", &body)?;
    assert_eq!(web1.request()?.0, 200);
    let text = std::fs::read_to_string(&daemon.config)?
        .replace(&pki.web1.sha256, &pki.unpinned.sha256)
        .replace(
            "[server.tls]\n",
            &format!(
                "[server.tls]\ncrl_file = \"{}\"\n",
                token.path("missing.crl").display()
            ),
        );
    std::fs::write(&daemon.config, text)?;
    daemon.signal("HUP")?;
    wait_until(Duration::from_secs(10), "the reload", || {
        Ok(daemon.log_text().contains("configuration reloaded"))
    })?;
    assert!(
        daemon.log_text().contains("CRLs not reloaded"),
        "{}",
        daemon.log_text()
    );
    let (status, _, refused) = web1.request()?;
    assert_eq!(status, 403, "{refused}");
    assert!(web1.closed()?, "the connection stayed open");
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

/// A certificate that expires while its connection is open: the next request gets 403
/// and the connection closes.
#[test]
fn a_certificate_that_expires_is_refused_on_its_open_connection() -> Result {
    let token = TestToken::new()?;
    provision(&token, &[EPUAP])?;
    let pki = pki(token.dir.path())?;
    let key = KeySpec::P256.generate()?;
    // Long enough for the daemon to start and answer once.
    let expires = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs()
        + 5;
    let cert = pki.ca.issue_until(
        &key,
        "gsko-web1",
        openssl::asn1::Asn1Time::from_unix(expires as i64)?,
    )?;
    let short = write_identity(token.dir.path(), "short-lived", &cert, &key)?;
    // Pinned as gsko-web1 in place of the usual certificate.
    let pinned = Pki {
        web1: Identity {
            sha256: short.sha256.clone(),
            cert: short.cert.clone(),
            key: short.key.clone(),
        },
        ..pki
    };
    // An idle keep-alive connection lasts read_timeout_ms (5 s by default): longer here, so
    // that the connection is still open when the certificate has expired.
    let (daemon, port) = start_keys(&token, &pinned, &[EPUAP], "read_timeout_ms = 30000", "")?;
    let mut web1 = KeptAlive::open(
        &pinned,
        port,
        &short,
        "/v1/keys/epuap/sign",
        &sign_body_data(),
    )?;
    let (status, _, signed) = web1.request()?;
    assert_eq!(status, 200, "{signed}");
    wait_until(Duration::from_secs(10), "the certificate's expiry", || {
        Ok(std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs()
            > expires)
    })?;
    let (status, connection, refused) = web1.request()?;
    assert_eq!(status, 403, "{refused}");
    assert!(refused.contains("no longer verifies"), "{refused}");
    assert_eq!(connection.as_deref(), Some("close"));
    assert!(web1.closed()?, "the connection stayed open");
    refused_on_open_connection(&daemon, "gsko-web1")?;
    Ok(())
}

/// A CRL of the client CA revoking `revoked` (by serial), PEM, made with python's
/// `cryptography` (a library this project did not write).
fn write_crl(pki: &Pki, revoked: &[&Identity], path: &Path) -> Result {
    let script = r#"
import datetime, sys
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
ca = x509.load_pem_x509_certificate(open(sys.argv[1], "rb").read())
key = serialization.load_pem_private_key(open(sys.argv[2], "rb").read(), None)
now = datetime.datetime.now(datetime.timezone.utc)
b = x509.CertificateRevocationListBuilder().issuer_name(ca.subject).last_update(now - datetime.timedelta(minutes=1)).next_update(now + datetime.timedelta(days=1)).add_extension(x509.CRLNumber(1), False)
for p in sys.argv[4:]:
    serial = x509.load_pem_x509_certificate(open(p, "rb").read()).serial_number
    b = b.add_revoked_certificate(x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now - datetime.timedelta(minutes=1)).build())
open(sys.argv[3], "wb").write(b.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
"#;
    let mut cmd = Command::new("python3");
    cmd.args(["-c", script])
        .arg(&pki.client_ca)
        .arg(&pki.ca_key)
        .arg(path);
    for identity in revoked {
        cmd.arg(&identity.cert);
    }
    run_ok(&mut cmd)?;
    Ok(())
}

/// `crl_file`: a revoked certificate cannot complete the handshake; a CRL changed on
/// reload refuses the next request of a connection already open, which then closes.
#[test]
fn a_revoked_certificate_is_refused_at_the_handshake_and_on_open_connections() -> Result {
    let token = TestToken::new()?;
    provision(&token, &[EPUAP])?;
    let pki = pki(token.dir.path())?;
    let crl = token.path("client-ca.crl");
    write_crl(&pki, &[&pki.web2], &crl)?;
    let (daemon, port) = start(&token, &pki, &format!("crl_file = \"{}\"", crl.display()))?;
    let body = sign_body_data();
    let out = curl_tls(
        &pki,
        port,
        Some(&pki.web2),
        "/v1/keys/epuap/sign",
        Some(&body),
    )?;
    assert!(
        !out.status.success(),
        "a revoked certificate completed the handshake"
    );
    let mut web1 = KeptAlive::open(&pki, port, &pki.web1, "/v1/keys/epuap/sign", &body)?;
    let (status, _, signed) = web1.request()?;
    assert_eq!(status, 200, "{signed}");
    // The same CRL as DER, now revoking gsko-web1 too: re-read on reload.
    write_crl(&pki, &[&pki.web1, &pki.web2], &crl)?;
    let der = Command::new("openssl")
        .args(["crl", "-outform", "DER", "-in"])
        .arg(&crl)
        .output()?;
    assert!(der.status.success());
    std::fs::write(&crl, &der.stdout)?;
    daemon.signal("HUP")?;
    wait_until(Duration::from_secs(10), "the reload", || {
        Ok(daemon.log_text().contains("configuration reloaded"))
    })?;
    let (status, connection, refused) = web1.request()?;
    assert_eq!(status, 403, "{refused}");
    assert!(refused.contains("Revoked"), "{refused}");
    assert_eq!(connection.as_deref(), Some("close"));
    assert!(web1.closed()?, "the connection stayed open");
    refused_on_open_connection(&daemon, "gsko-web1")?;
    let out = curl_tls(
        &pki,
        port,
        Some(&pki.web1),
        "/v1/keys/epuap/sign",
        Some(&body),
    )?;
    assert!(
        !out.status.success(),
        "a revoked certificate completed the handshake"
    );
    Ok(())
}

/// A `[[clients]]` name shaped like the name the daemon gives an unpinned certificate
/// (`sha256:` and 16 hex digits) would take over that certificate's identity: refused at
/// start and on reload, with the reason.
#[test]
fn a_client_named_like_an_unpinned_fingerprint_is_refused() -> Result {
    let token = TestToken::new()?;
    provision(&token, &[EPUAP])?;
    let pki = pki(token.dir.path())?;
    let (daemon, port) = start(&token, &pki, "")?;
    let good = std::fs::read_to_string(&daemon.config)?;
    let impostor = format!("sha256:{}", &pki.unpinned.sha256[..16]);
    let bad = good.replace("name = \"gsko-web2\"", &format!("name = \"{impostor}\""));
    std::fs::write(&daemon.config, &bad)?;
    daemon.signal("HUP")?;
    wait_until(Duration::from_secs(10), "the refused reload", || {
        Ok(daemon.log_text().contains("reload refused"))
    })?;
    assert!(
        daemon.log_text().contains("use 1 to 63 of a-z"),
        "{}",
        daemon.log_text()
    );
    // The running rules stay: the unpinned certificate is still unknown.
    let (status, refused) = answer(&curl_tls(
        &pki,
        port,
        Some(&pki.unpinned),
        "/v1/keys/epuap/sign",
        Some(&sign_body_data()),
    )?)?;
    assert_eq!(status, 403, "{refused}");
    assert!(refused.to_string().contains("not pinned"), "{refused}");
    drop(daemon);
    let config = token.path("impostor.toml");
    std::fs::write(&config, &bad)?;
    let err = match Daemon::start_with(&token, config) {
        Ok(_) => return Err("the daemon started with a client named sha256:…".into()),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains(&format!("[[clients]] name \"{impostor}\"")),
        "{err}"
    );
    Ok(())
}
