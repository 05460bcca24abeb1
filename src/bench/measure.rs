//! `hsm-signer bench token` and `bench daemon`: how fast the token signs on its own, and how fast the daemon
//! signs through its socket, measured the same way so the two can be compared.
//!
//! Both loops sign the same input (a 1 KiB stand-in for a SAML SignedInfo, or its
//! digest), record every latency, and report operations per second and percentiles.
//! Through the daemon, the one-call XML endpoints can be measured too: a ~4 KiB
//! TpUserInfo envelope to `wss/sign`, a ~4 KiB WK AuthnRequest to `saml/sign`, a
//! client-assertion-shaped payload to `jws/sign`, KSeF's `AuthTokenRequest` to
//! `xades/sign`.

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
    /// `POST /v1/keys/{name}/jws/sign`: a compact JWS over a JSON payload shaped like an
    /// e-Doręczenia client assertion's claims.
    Jws,
    /// `POST /v1/keys/{name}/xades/sign`: enveloped XAdES-BES over KSeF's
    /// `AuthTokenRequest`.
    Xades,
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
    /// Answers whose signature was checked (`daemon`: each client's first and last):
    /// against the key's certificate for `sign`; for `wss` and `saml`, the certificate
    /// named and a SignatureValue present (scripts/bench runs xmlsec1 on a sample).
    pub verified: u64,
    /// Checked answers that failed the check.
    pub bad_signatures: u64,
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
/// declaration, a comment, indentation, and a Body padded with the caller's context. The
/// Body carries its own `wsu:Id` (as CXF-style stacks send it), so every request signs
/// the same SignedInfo: the floor's null signer then computes no signature after the
/// first.
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
                  xmlns:tpus="http://wsdl.tpuserinfo.epuap.gov.pl/"
                  xmlns:wsu="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd">
  <soapenv:Header/>
  <soapenv:Body wsu:Id="id-body-gsko">
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

/// The claims of an e-Doręczenia client assertion (RFC 7523), as a `jws/sign` payload.
pub fn sample_jws_payload() -> serde_json::Value {
    serde_json::json!({
        "iss": "AE:PL-12345-67890-ABCDE-12",
        "sub": "AE:PL-12345-67890-ABCDE-12",
        "aud": "https://int-ow.edoreczenia.gov.pl/auth/realms/EDOR/protocol/openid-connect/token",
        "iat": 1_796_630_400,
        "nbf": 1_796_630_400,
        "exp": 1_796_630_460,
        "jti": "6f1c2b0e-3d4a-4f5b-9c8d-7e6f5a4b3c2d"
    })
}

/// KSeF's `AuthTokenRequest` (schemat_auth_v2-1.xsd), as `xades/sign` gets it.
pub fn sample_auth_token_request() -> String {
    concat!(
        r#"<?xml version="1.0" encoding="utf-8"?>"#,
        "\n",
        r#"<AuthTokenRequest xmlns="http://ksef.mf.gov.pl/auth/token/2.1">"#,
        "<Challenge>20261207-CR-1A2B3C4D5E-F6A7B8C9D0-1E</Challenge>",
        "<ContextIdentifier><Nip>5260250274</Nip></ContextIdentifier>",
        "<SubjectIdentifierType>certificateSubject</SubjectIdentifierType>",
        "</AuthTokenRequest>\n"
    )
    .to_string()
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
        Endpoint::Jws => {
            let payload = sample_jws_payload();
            let len = payload.to_string().len();
            let body = serde_json::json!({ "algorithm": algorithm.name(), "payload": payload });
            (format!("/v1/keys/{key}/jws/sign"), body.to_string(), len)
        }
        Endpoint::Xades => {
            let xml = sample_auth_token_request();
            let len = xml.len();
            let body = serde_json::json!({ "algorithm": algorithm.name(), "xml": xml });
            (format!("/v1/keys/{key}/xades/sign"), body.to_string(), len)
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
        verified: 0,
        bad_signatures: 0,
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
/// applies to `Endpoint::Sign` only. Each client's first and last answers are checked
/// (see [`BenchResult::verified`]); the last one is written to `sample_out`, if given.
#[allow(clippy::too_many_arguments)]
pub async fn daemon(
    at: &crate::client::Endpoint,
    endpoint: Endpoint,
    key: &str,
    algorithm: Algorithm,
    digest: bool,
    clients: usize,
    duration: Duration,
    sample_out: Option<&Path>,
) -> Result<BenchResult, crate::client::ClientError> {
    let (uri, body, input_bytes) = request_for(endpoint, key, algorithm, digest);
    let body = Bytes::from(body);
    let cert = certificate(at, key).await?;
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let mut sender = crate::client::connect_to(at).await?;
        let (body, uri) = (body.clone(), uri.clone());
        tasks.push(tokio::spawn(async move {
            let (mut micros, mut errors) = (Vec::new(), 0u64);
            let mut samples: Vec<Bytes> = Vec::new();
            while Instant::now() < deadline {
                let t0 = Instant::now();
                let request = hyper::Request::post(uri.as_str())
                    .header("host", "hsm-signer")
                    .header("content-type", "application/json")
                    .body(Full::new(body.clone()))
                    .expect("a valid request");
                let answer = match sender.send_request(request).await {
                    Ok(response) if response.status() == 200 => response
                        .into_body()
                        .collect()
                        .await
                        .ok()
                        .map(|b| b.to_bytes()),
                    Ok(_) | Err(_) => None,
                };
                if let Some(answer) = answer {
                    micros.push(t0.elapsed().as_micros() as u32);
                    // Each client's first and last answer are checked after the run.
                    if samples.len() < 2 {
                        samples.push(answer);
                    } else {
                        samples[1] = answer;
                    }
                } else {
                    errors += 1;
                    if sender.ready().await.is_err() {
                        break;
                    }
                }
            }
            (micros, errors, samples)
        }));
    }
    let (mut micros, mut errors, mut samples) = (Vec::new(), 0, Vec::new());
    for task in tasks {
        let (m, e, s) = task.await.unwrap_or_default();
        micros.extend(m);
        errors += e;
        samples.extend(s);
    }
    let input_digest = algorithm.hash().digest(&sample_input());
    let bad = samples
        .iter()
        .filter(|answer| !answer_checks(answer, endpoint, algorithm, &input_digest, &cert))
        .count() as u64;
    let mut result = summarise(
        "daemon",
        endpoint,
        input_bytes,
        algorithm,
        digest && endpoint == Endpoint::Sign,
        clients,
        micros,
        errors,
        started.elapsed(),
    );
    result.verified = samples.len() as u64;
    result.bad_signatures = bad;
    if let (Some(path), Some(last)) = (sample_out, samples.last()) {
        write_sample(path, endpoint, last, &cert)
            .map_err(|e| crate::client::ClientError::Http(format!("{}: {e}", path.display())))?;
    }
    Ok(result)
}

/// Writes the document of an XML answer, the compact JWS of a `jws` one (or the JSON of a
/// `sign` answer) to `path`, and
/// the certificate beside it as `path`.cert.pem, for an independent verifier.
fn write_sample(
    path: &Path,
    endpoint: Endpoint,
    answer: &[u8],
    cert: &openssl::x509::X509,
) -> std::io::Result<()> {
    let json: serde_json::Value = serde_json::from_slice(answer).unwrap_or_default();
    let field = match endpoint {
        Endpoint::Sign => None,
        Endpoint::Wss => Some("envelope"),
        Endpoint::Saml | Endpoint::Xades => Some("xml"),
        Endpoint::Jws => Some("jws"),
    };
    match field.and_then(|f| json[f].as_str()) {
        Some(document) => std::fs::write(path, document)?,
        None => std::fs::write(path, answer)?,
    }
    let pem = cert.to_pem().map_err(std::io::Error::other)?;
    let mut cert_path = path.as_os_str().to_owned();
    cert_path.push(".cert.pem");
    std::fs::write(cert_path, pem)
}

/// The certificate of `key`, as the daemon serves it.
async fn certificate(
    at: &crate::client::Endpoint,
    key: &str,
) -> Result<openssl::x509::X509, crate::client::ClientError> {
    let answer = crate::client::request(
        at,
        "GET",
        &format!("/v1/keys/{key}/certificate?format=base64"),
        None,
    )
    .await?;
    if answer.status != 200 {
        return Err(crate::client::refused(answer));
    }
    let der = base64::engine::general_purpose::STANDARD
        .decode(answer.body.as_str().unwrap_or_default().trim())
        .map_err(|e| crate::client::ClientError::Http(format!("certificate: {e}")))?;
    openssl::x509::X509::from_der(&der)
        .map_err(|e| crate::client::ClientError::Http(format!("certificate: {e}")))
}

/// Whether one answer holds a good signature: `sign` answers are verified over the
/// benchmark's input with the certificate's key; XML answers must name the certificate
/// and carry a SignatureValue (the daemon verified it before answering).
fn answer_checks(
    answer: &[u8],
    endpoint: Endpoint,
    algorithm: Algorithm,
    digest: &[u8],
    cert: &openssl::x509::X509,
) -> bool {
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(answer) else {
        return false;
    };
    let cert_sha256 = cert
        .to_der()
        .map(|der| hex::encode(openssl::sha::sha256(&der)))
        .unwrap_or_default();
    if json["certificate_sha256"].as_str() != Some(cert_sha256.as_str()) {
        return false;
    }
    match endpoint {
        Endpoint::Sign => {
            let Ok(signature) = base64::engine::general_purpose::STANDARD
                .decode(json["signature"].as_str().unwrap_or_default())
            else {
                return false;
            };
            // Digest runs sign the digest of the same input, so one check serves both.
            cert.public_key()
                .and_then(|key| {
                    crate::algorithm::verify_digest(&key, algorithm, digest, &signature)
                })
                .unwrap_or(false)
        }
        Endpoint::Wss => json["envelope"]
            .as_str()
            .is_some_and(|x| x.contains("SignatureValue>")),
        Endpoint::Saml => json["xml"]
            .as_str()
            .is_some_and(|x| x.contains("SignatureValue>")),
        Endpoint::Xades => json["xml"]
            .as_str()
            .is_some_and(|x| x.contains("SignatureValue>") && x.contains("SignedProperties")),
        Endpoint::Jws => json["jws"]
            .as_str()
            .is_some_and(|jws| jws_verifies(jws, algorithm, cert)),
    }
}

/// Whether a compact JWS's signature verifies with the certificate's key (OpenSSL), its
/// header names `algorithm`, and its payload is the benchmark's.
fn jws_verifies(jws: &str, algorithm: Algorithm, cert: &openssl::x509::X509) -> bool {
    let url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut parts = jws.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let header_names_alg = url
        .decode(header)
        .ok()
        .and_then(|h| serde_json::from_slice::<serde_json::Value>(&h).ok())
        .is_some_and(|h| h["alg"].as_str() == Some(algorithm.name()));
    let payload_is_ours = url
        .decode(payload)
        .ok()
        .and_then(|p| serde_json::from_slice::<serde_json::Value>(&p).ok())
        .is_some_and(|p| p == sample_jws_payload());
    let Ok(signature) = url.decode(signature) else {
        return false;
    };
    let digest = algorithm
        .hash()
        .digest(format!("{header}.{payload}").as_bytes());
    header_names_alg
        && payload_is_ours
        && cert
            .public_key()
            .and_then(|key| crate::algorithm::verify_digest(&key, algorithm, &digest, &signature))
            .unwrap_or(false)
}
