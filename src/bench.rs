//! `hsm-signer bench`: how fast the token signs on its own, and how fast the daemon
//! signs through its socket, measured the same way so the two can be compared.
//!
//! Both loops sign the same input (a 1 KiB stand-in for a SAML SignedInfo, or its
//! digest), record every latency, and report operations per second and percentiles.
//! Through the daemon, the one-call XML endpoints can be measured too: a ~4 KiB
//! TpUserInfo envelope to `wss/sign`, a ~4 KiB WK AuthnRequest to `saml/sign`.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use secrecy::SecretString;
use serde::Serialize;

use crate::algorithm::Algorithm;
use crate::token::{sign_digest, OpenToken, StoredKey, TokenError, TokenSelector};

/// Which daemon endpoint a benchmark calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Endpoint {
    /// `POST /v1/keys/{name}/sign`: SignedInfo bytes (or their digest).
    Sign,
    /// `POST /v1/keys/{name}/wss/sign`: a whole SOAP envelope.
    Wss,
    /// `POST /v1/keys/{name}/saml/sign`: a whole AuthnRequest.
    Saml,
}

/// One measurement.
#[derive(Debug, Clone, Serialize)]
pub struct BenchResult {
    /// What was measured ("token", "daemon").
    pub path: &'static str,
    /// The daemon endpoint; `sign` for the token's own runs.
    pub endpoint: Endpoint,
    /// Bytes of the input each request carries (data, digest or document).
    pub input_bytes: usize,
    /// Algorithm.
    pub algorithm: Algorithm,
    /// Whether a digest (not data) was sent.
    pub digest: bool,
    /// Parallel sessions (token) or clients (daemon).
    pub parallel: usize,
    /// Signatures made.
    pub ops: u64,
    /// Failures.
    pub errors: u64,
    /// Wall time, seconds.
    pub seconds: f64,
    /// Signatures per second.
    pub per_second: f64,
    /// Median latency, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile latency, milliseconds.
    pub p99_ms: f64,
    /// Slowest, milliseconds.
    pub max_ms: f64,
    /// CPU time this benchmark process used (user + system), seconds: the signing itself
    /// for `token`, the client's share for `daemon`.
    pub cpu_seconds: f64,
}

/// The input every benchmark signs: 1 KiB, like an exclusive-c14n SignedInfo.
pub fn sample_input() -> Vec<u8> {
    let mut text = String::from("<ds:SignedInfo xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\">");
    while text.len() < 1000 {
        text.push_str("<ds:Reference URI=\"#_a1b2c3\"><ds:DigestValue>q1w2e3r4t5y6</ds:DigestValue></ds:Reference>");
    }
    text.push_str("</ds:SignedInfo>");
    text.into_bytes()
}

/// A TpUserInfo call as GSKO's SOAP stack sends it to `wss/sign`, about 4 KiB: the
/// declaration, a comment, indentation, and a Body padded with the caller's context.
pub fn sample_envelope() -> String {
    let mut context = String::new();
    let mut n = 0;
    while context.len() < 3300 {
        n += 1;
        context.push_str(&format!(
            "        <atrybut nazwa=\"sprawa-{n}\">Wniosek o wydanie zaświadczenia nr {n}/2026 &amp; załączniki</atrybut>\n"
        ));
    }
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<!-- GSKO → ePUAP TpUserInfo -->
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"
                  xmlns:tpus="http://wsdl.tpuserinfo.epuap.gov.pl/">
  <soapenv:Header/>
  <soapenv:Body>
    <tpus:GetTpUserInfo>
      <tpUserObjectsInfoRequest>
        <callerId>gmina-przykladowo</callerId>
        <userId>jan.kowalski</userId>
{context}      </tpUserObjectsInfoRequest>
    </tpus:GetTpUserInfo>
  </soapenv:Body>
</soapenv:Envelope>
"#
    )
}

/// A WK AuthnRequest for `saml/sign`, about 4 KiB with its eIDAS requested attributes.
pub fn sample_authn_request() -> String {
    let mut attributes = String::new();
    let mut n = 0;
    while attributes.len() < 3000 {
        n += 1;
        attributes.push_str(&format!(
            "<eidas:RequestedAttribute FriendlyName=\"Attribute{n}\" Name=\"http://eidas.europa.eu/attributes/naturalperson/Attribute{n}\" NameFormat=\"urn:oasis:names:tc:SAML:2.0:attrname-format:uri\" isRequired=\"true\"/>"
        ));
    }
    format!(
        r#"<saml2p:AuthnRequest xmlns:saml2p="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml2="urn:oasis:names:tc:SAML:2.0:assertion" xmlns:eidas="http://eidas.europa.eu/saml-extensions" AssertionConsumerServiceURL="https://gsko.przykladowo.pl/wk/acs" Destination="https://symulator.login.gov.pl/login/SingleSignOnService" ForceAuthn="true" ID="ID-6a7c8f2e-54e1-4d59-bb7a-1b3e36a0c111" IssueInstant="2026-03-01T10:00:00.000Z" Version="2.0"><saml2:Issuer>https://gsko.przykladowo.pl</saml2:Issuer><saml2p:Extensions><eidas:SPType>public</eidas:SPType><eidas:RequestedAttributes>{attributes}</eidas:RequestedAttributes></saml2p:Extensions><saml2p:NameIDPolicy AllowCreate="true" Format="urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified"/></saml2p:AuthnRequest>"#
    )
}

/// The path and JSON body of one benchmark request, and how many bytes of input it carries.
fn request_for(
    endpoint: Endpoint,
    key: &str,
    algorithm: Algorithm,
    digest: bool,
) -> (String, String, usize) {
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    match endpoint {
        Endpoint::Sign => {
            let input = sample_input();
            let (field, payload) = if digest {
                ("digest", algorithm.hash().digest(&input))
            } else {
                ("data", input)
            };
            let body = serde_json::json!({ "algorithm": algorithm.name(), field: b64(&payload) });
            (
                format!("/v1/keys/{key}/sign"),
                body.to_string(),
                payload.len(),
            )
        }
        Endpoint::Wss => {
            let envelope = sample_envelope();
            let len = envelope.len();
            let body = serde_json::json!({ "algorithm": algorithm.name(), "envelope": envelope });
            (format!("/v1/keys/{key}/wss/sign"), body.to_string(), len)
        }
        Endpoint::Saml => {
            let xml = sample_authn_request();
            let len = xml.len();
            let body = serde_json::json!({ "algorithm": algorithm.name(), "xml": xml });
            (format!("/v1/keys/{key}/saml/sign"), body.to_string(), len)
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn summarise(
    path: &'static str,
    endpoint: Endpoint,
    input_bytes: usize,
    algorithm: Algorithm,
    digest: bool,
    parallel: usize,
    mut micros: Vec<u32>,
    errors: u64,
    elapsed: Duration,
) -> BenchResult {
    micros.sort_unstable();
    let pick = |q: f64| -> f64 {
        if micros.is_empty() {
            return 0.0;
        }
        let index = ((micros.len() as f64 - 1.0) * q).round() as usize;
        f64::from(micros[index]) / 1000.0
    };
    let seconds = elapsed.as_secs_f64();
    BenchResult {
        path,
        endpoint,
        input_bytes,
        algorithm,
        digest,
        parallel,
        ops: micros.len() as u64,
        errors,
        seconds,
        per_second: micros.len() as f64 / seconds,
        p50_ms: pick(0.50),
        p99_ms: pick(0.99),
        max_ms: pick(1.0),
        cpu_seconds: process_cpu_seconds(),
    }
}

/// User plus system CPU time of this process so far.
fn process_cpu_seconds() -> f64 {
    use nix::sys::resource::{getrusage, UsageWho};
    getrusage(UsageWho::RUSAGE_SELF)
        .map(|u| {
            let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
            t(u.user_time()) + t(u.system_time())
        })
        .unwrap_or(0.0)
}

/// Signs directly through PKCS#11 from `parallel` threads, each with its own long-lived
/// session, for `duration`.
pub fn token(
    module: &Path,
    selector: &TokenSelector,
    pin: &SecretString,
    label: &str,
    algorithm: Algorithm,
    parallel: usize,
    duration: Duration,
) -> Result<BenchResult, TokenError> {
    let open = OpenToken::open(module, selector, false)?;
    open.login(pin, false)?;
    let key = StoredKey::find(&open.session, &open.info.label, label)?;
    let input = Arc::new(sample_input());
    let started = Instant::now();
    let deadline = started + duration;
    let mut threads = Vec::new();
    for _ in 0..parallel {
        let session = open
            .module
            .ctx()
            .open_ro_session(open.slot)
            .map_err(TokenError::pkcs11("opening a session"))?;
        let (input, handle) = (input.clone(), key.handle);
        threads.push(std::thread::spawn(move || {
            let (mut micros, mut errors) = (Vec::new(), 0u64);
            while Instant::now() < deadline {
                let t0 = Instant::now();
                let digest = algorithm.hash().digest(&input);
                match sign_digest(&session, handle, algorithm, &digest) {
                    Ok(_) => micros.push(t0.elapsed().as_micros() as u32),
                    Err(_) => errors += 1,
                }
            }
            (micros, errors)
        }));
    }
    let (mut micros, mut errors) = (Vec::new(), 0);
    for t in threads {
        let (m, e) = t.join().expect("bench thread");
        micros.extend(m);
        errors += e;
    }
    Ok(summarise(
        "token",
        Endpoint::Sign,
        input.len(),
        algorithm,
        false,
        parallel,
        micros,
        errors,
        started.elapsed(),
    ))
}

/// Asks the daemon at `at` (its socket, or its TLS listener) for signatures at
/// `endpoint` from `clients` keep-alive connections at once, for `duration`. `digest`
/// applies to `Endpoint::Sign` only.
pub async fn daemon(
    at: &crate::client::Endpoint,
    endpoint: Endpoint,
    key: &str,
    algorithm: Algorithm,
    digest: bool,
    clients: usize,
    duration: Duration,
) -> Result<BenchResult, crate::client::ClientError> {
    let (uri, body, input_bytes) = request_for(endpoint, key, algorithm, digest);
    let body = Bytes::from(body);
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let mut sender = crate::client::connect_to(at).await?;
        let (body, uri) = (body.clone(), uri.clone());
        tasks.push(tokio::spawn(async move {
            let (mut micros, mut errors) = (Vec::new(), 0u64);
            while Instant::now() < deadline {
                let t0 = Instant::now();
                let request = hyper::Request::post(uri.as_str())
                    .header("host", "hsm-signer")
                    .header("content-type", "application/json")
                    .body(Full::new(body.clone()))
                    .expect("a valid request");
                let ok = match sender.send_request(request).await {
                    Ok(response) => {
                        let status = response.status();
                        response.into_body().collect().await.is_ok() && status == 200
                    }
                    Err(_) => false,
                };
                if ok {
                    micros.push(t0.elapsed().as_micros() as u32);
                } else {
                    errors += 1;
                    if sender.ready().await.is_err() {
                        break;
                    }
                }
            }
            (micros, errors)
        }));
    }
    let (mut micros, mut errors) = (Vec::new(), 0);
    for task in tasks {
        let (m, e) = task.await.unwrap_or_default();
        micros.extend(m);
        errors += e;
    }
    Ok(summarise(
        "daemon",
        endpoint,
        input_bytes,
        algorithm,
        digest && endpoint == Endpoint::Sign,
        clients,
        micros,
        errors,
        started.elapsed(),
    ))
}
