//! Several daemons, one network HSM (docs/scale-out.md): two daemons, each the signer of
//! its own GSKO node, on one `p11-kit server` standing in for the HSM cluster. Both sign
//! with the same key name and certificate; the HSM going away and coming back is
//! survived by both; killing one leaves the other serving. Throughput of the two against
//! one is measured and printed, not asserted (on 2 cores with a software token there is
//! no scaling to claim; the point is that the shape works).

use crate::common;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::daemon::*;
use common::p11kit::{P11KitServer, CLIENT_MODULE};
use common::*;
use hsm_signer::client::{self, Endpoint};

use crate::common::daemon::EPUAP;

/// A daemon of its own (socket, log, audit in `home`'s directory) on `hsm`'s token,
/// reached through the p11-kit client module.
fn daemon_on(home: &TestToken, hsm: &TestToken, p11_socket: &std::path::Path) -> Result<Daemon> {
    let config = Daemon::config_text(home, &[EPUAP], "request_timeout_ms = 2000")
        .replace(
            &format!("module = \"{MODULE}\""),
            &format!("module = \"{CLIENT_MODULE}\""),
        )
        .replace(
            &format!("token = \"{}\"", home.label),
            &format!("token = \"{}\"", hsm.label),
        );
    let path = home.path("config.toml");
    std::fs::write(&path, config)?;
    let address = format!("unix:path={}", p11_socket.display());
    Daemon::start_with_env(home, path, &[("P11_KIT_SERVER_ADDRESS", &address)])
}

/// Signs with `clients` concurrent keep-alive-free clients on each endpoint for `for_`;
/// returns the verified signatures per second, all endpoints together.
fn throughput(
    endpoints: &[Endpoint],
    public: &openssl::pkey::PKey<openssl::pkey::Public>,
    clients: usize,
    for_: Duration,
) -> Result<f64> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let ok = Arc::new(AtomicU64::new(0));
    let wrong = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    runtime.block_on(async {
        let mut tasks = Vec::new();
        for endpoint in endpoints {
            for c in 0..clients {
                let (endpoint, ok, wrong, public) =
                    (endpoint.clone(), ok.clone(), wrong.clone(), public.clone());
                tasks.push(tokio::spawn(async move {
                    let mut n = 0u64;
                    while started.elapsed() < for_ {
                        n += 1;
                        let data = format!("<SignedInfo c=\"{c}\" n=\"{n}\"/>");
                        if let Ok(sig) =
                            client::sign(&endpoint, "epuap", "RS256", data.as_bytes(), false, None)
                                .await
                        {
                            let mut v = openssl::sign::Verifier::new(
                                openssl::hash::MessageDigest::sha256(),
                                &public,
                            )
                            .expect("verifier");
                            if v.verify_oneshot(&sig, data.as_bytes()).unwrap_or(false) {
                                ok.fetch_add(1, Ordering::Relaxed);
                            } else {
                                wrong.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                }));
            }
        }
        for t in tasks {
            let _ = t.await;
        }
    });
    assert_eq!(wrong.load(Ordering::Relaxed), 0, "wrong signatures");
    Ok(ok.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}

fn signs(daemon: &Daemon, leaf: &common::fixtures::Leaf) -> Result<Option<String>> {
    let data = b"<SignedInfo>scale-out</SignedInfo>";
    let (status, answer) = daemon.json(
        "POST",
        "/v1/keys/epuap/sign",
        Some(&sign_body("RS256", "data", data)),
    )?;
    if status != 200 {
        return Ok(None);
    }
    let public = leaf.cert.public_key()?;
    let mut v = openssl::sign::Verifier::new(openssl::hash::MessageDigest::sha256(), &public)?;
    assert!(v.verify_oneshot(&signature_of(&answer)?, data)?);
    Ok(answer["certificate_sha256"].as_str().map(String::from))
}

#[test]
fn two_daemons_share_one_network_hsm_and_each_survives_the_other() -> Result {
    if !std::path::Path::new(CLIENT_MODULE).exists() {
        return Err(format!("{CLIENT_MODULE} missing: apt-get install p11-kit-modules").into());
    }
    let hsm = TestToken::new()?;
    let leaves = provision(&hsm, &[EPUAP])?;
    let p11_socket = hsm.path("p11kit.sock");
    let server = P11KitServer::start(&hsm, &p11_socket)?;
    let node_a = TestToken::new()?;
    let node_b = TestToken::new()?;
    let a = daemon_on(&node_a, &hsm, &p11_socket)?;
    let b = daemon_on(&node_b, &hsm, &p11_socket)?;

    // Both sign, with the same key name and certificate.
    let cert_a = signs(&a, &leaves[0])?.ok_or("daemon A did not sign")?;
    let cert_b = signs(&b, &leaves[0])?.ok_or("daemon B did not sign")?;
    assert_eq!(cert_a, cert_b);
    assert_eq!(cert_a, leaves[0].sha256_hex()?);

    // Throughput: one daemon, then both at once, 4 clients each.
    let public = leaves[0].cert.public_key()?;
    let ea = Endpoint::Unix(a.socket.clone());
    let eb = Endpoint::Unix(b.socket.clone());
    let one = throughput(
        std::slice::from_ref(&ea),
        &public,
        4,
        Duration::from_secs(2),
    )?;
    let two = throughput(&[ea, eb], &public, 4, Duration::from_secs(2))?;
    eprintln!(
        "RS256 through p11-kit server: one daemon {one:.0}/s, two daemons together {two:.0}/s ({:.2}x)",
        two / one
    );

    // The network HSM goes away: both answer 503 at once; it comes back: both sign.
    server.kill()?;
    for daemon in [&a, &b] {
        let (status, answer) = daemon.json(
            "POST",
            "/v1/keys/epuap/sign",
            Some(&sign_body("RS256", "data", b"during the outage")),
        )?;
        assert_eq!(status, 503, "{answer}");
    }
    let server = P11KitServer::start(&hsm, &p11_socket)?;
    for (name, daemon) in [("A", &a), ("B", &b)] {
        // Generous under a loaded CI machine: the point is that both come back by
        // themselves, not how fast; the daemon's log explains a failure.
        wait_until(
            Duration::from_secs(30),
            &format!("daemon {name} to sign again"),
            || Ok(signs(daemon, &leaves[0])?.is_some()),
        )
        .map_err(|e| format!("{e}\n{}", daemon.log_text()))?;
    }

    // Daemon A dies: B keeps serving.
    a.signal("KILL")?;
    std::thread::sleep(Duration::from_millis(200));
    for _ in 0..20 {
        assert!(signs(&b, &leaves[0])?.is_some(), "B stopped with A");
    }
    drop(a);
    drop(server);
    Ok(())
}
