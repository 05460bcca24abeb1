//! Certificate renewal without downtime. Continuous signing from four clients while the
//! new key is imported beside the old one under a new label, the configuration is pointed
//! at it and the daemon gets SIGHUP: no request may fail, and every signature must verify
//! against the certificate whose SHA-256 the response names. Also `import --replace`
//! under a running daemon: the next request finds the new key by itself.

use crate::common;
use crate::common::daemon::EPUAP;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use common::daemon::{Daemon, KeySetup};
use common::fixtures::{import_cmd, secret_file, write_p12, Ca, KeySpec, Leaf};
use common::*;
use openssl::hash::MessageDigest;
use openssl::x509::X509;

fn import(token: &TestToken, ca: &Ca, label: &str, replace: bool) -> Result<Leaf> {
    let leaf = ca.leaf(KeySpec::Rsa(2048))?;
    let p12 = token.path(&format!("{label}-{}.p12", leaf.serial_hex()?));
    write_p12(&p12, &leaf, ca, label, "hasło")?;
    let password = secret_file(token.dir.path(), "pw", "hasło")?;
    let mut cmd = import_cmd(token, &p12, &password);
    if replace {
        cmd.arg("--replace");
    }
    run_ok(&mut cmd)?;
    Ok(leaf)
}

fn fingerprint(cert: &X509) -> Result<String> {
    Ok(hex::encode(cert.digest(MessageDigest::sha256())?))
}

/// Signs `data` and checks the signature against the certificate the response names.
fn sign_and_check(daemon: &Daemon, certs: &HashMap<String, X509>, data: &str) -> Result<String> {
    let body = serde_json::json!({"algorithm": "RS256", "data": base64::engine::general_purpose::STANDARD.encode(data)});
    let (status, answer) = daemon.json("POST", "/v1/keys/epuap/sign", Some(&body.to_string()))?;
    if status != 200 {
        return Err(format!("status {status}: {answer}").into());
    }
    let fp = answer["certificate_sha256"]
        .as_str()
        .ok_or("no certificate_sha256")?
        .to_string();
    let cert = certs
        .get(&fp)
        .ok_or_else(|| format!("unknown certificate {fp}"))?;
    let signature = base64::engine::general_purpose::STANDARD
        .decode(answer["signature"].as_str().ok_or("no signature")?)?;
    let public = cert.public_key()?;
    let mut verifier = openssl::sign::Verifier::new(MessageDigest::sha256(), &public)?;
    if !verifier.verify_oneshot(&signature, data.as_bytes())? {
        return Err(
            format!("signature does not verify against the certificate {fp} it names").into(),
        );
    }
    Ok(fp)
}

#[test]
fn switching_to_a_new_label_with_sighup_loses_no_request() -> Result {
    let token = TestToken::new()?;
    let ca = Ca::sigillum()?;
    let old = import(&token, &ca, "gsko-epuap-2025", false)?;
    let keys = [KeySetup::rs256("epuap", "gsko-epuap-2025")];
    let daemon = Arc::new(Daemon::start(&token, &keys, "")?);
    let new = import(&token, &ca, "gsko-epuap-2027", false)?;
    let certs: HashMap<String, X509> = [
        (fingerprint(&old.cert)?, old.cert.clone()),
        (fingerprint(&new.cert)?, new.cert.clone()),
    ]
    .into_iter()
    .collect();
    let certs = Arc::new(certs);
    let stop = Arc::new(AtomicBool::new(false));
    let seen: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
    let failures: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut clients = Vec::new();
    for client in 0..4 {
        let (daemon, certs, stop, seen, failures) = (
            daemon.clone(),
            certs.clone(),
            stop.clone(),
            seen.clone(),
            failures.clone(),
        );
        clients.push(std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                match sign_and_check(
                    &daemon,
                    &certs,
                    &format!("<SignedInfo c=\"{client}\" n=\"{n}\"/>"),
                ) {
                    Ok(fp) => *seen.lock().expect("seen").entry(fp).or_default() += 1,
                    Err(e) => failures.lock().expect("failures").push(e.to_string()),
                }
            }
        }));
    }
    std::thread::sleep(Duration::from_millis(500));
    let text = std::fs::read_to_string(&daemon.config)?
        .replace("label = \"gsko-epuap-2025\"", "label = \"gsko-epuap-2027\"");
    std::fs::write(&daemon.config, text)?;
    daemon.signal("HUP")?;
    let new_fp = fingerprint(&new.cert)?;
    let switched = Instant::now();
    while seen
        .lock()
        .expect("seen")
        .get(&new_fp)
        .copied()
        .unwrap_or(0)
        < 20
    {
        if switched.elapsed() > Duration::from_secs(10) {
            return Err(format!(
                "no signature with the new key 10 s after SIGHUP: {}",
                daemon.log_text()
            )
            .into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().map_err(|_| "client panicked")?;
    }
    let failures = failures.lock().expect("failures");
    let seen = seen.lock().expect("seen");
    eprintln!(
        "renewal: signatures per certificate {seen:?}; failures {}",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} requests failed across the switch: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(
        seen.get(&fingerprint(&old.cert)?).copied().unwrap_or(0) > 0,
        "no signature with the old key"
    );
    // After the switch every new request uses the new key.
    let fp = sign_and_check(&daemon, &certs, "after")?;
    assert_eq!(fp, new_fp);
    let (_, key) = daemon.json("GET", "/v1/keys/epuap", None)?;
    assert_eq!(
        key["certificate"]["sha256"].as_str(),
        Some(new_fp.as_str()),
        "{key}"
    );
    Ok(())
}

#[test]
fn import_replace_under_a_running_daemon_is_picked_up_by_the_next_request() -> Result {
    let token = TestToken::new()?;
    let ca = Ca::sigillum()?;
    let old = import(&token, &ca, "gsko-epuap", false)?;
    let keys = [EPUAP];
    let daemon = Daemon::start(&token, &keys, "")?;
    let mut certs = HashMap::new();
    certs.insert(fingerprint(&old.cert)?, old.cert.clone());
    assert_eq!(
        sign_and_check(&daemon, &certs, "before")?,
        fingerprint(&old.cert)?
    );
    let new = import(&token, &ca, "gsko-epuap", true)?;
    certs.insert(fingerprint(&new.cert)?, new.cert.clone());
    assert_eq!(
        sign_and_check(&daemon, &certs, "after")?,
        fingerprint(&new.cert)?,
        "{}",
        daemon.log_text()
    );
    Ok(())
}
