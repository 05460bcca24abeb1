//! `hsm-signer sign`: a small client for scripts and tests, speaking the same HTTP/JSON
//! over the Unix socket that GSKO uses.

use std::path::{Path, PathBuf};

use rustls::pki_types::ServerName;

use base64::Engine;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::Request;
use hyper_util::rt::TokioIo;

/// What the daemon answered.
#[derive(Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// The JSON body.
    pub body: serde_json::Value,
}

/// Why the client failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No daemon at the socket.
    #[error("cannot connect to {path}: {source} (is `hsm-signer serve` running, and may this user open the socket?)")]
    Connect {
        /// The socket.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// HTTP failed.
    #[error("HTTP exchange with the daemon failed: {0}")]
    Http(String),
    /// The TLS set-up or handshake failed.
    #[error("TLS: {0}")]
    Tls(String),
    /// The daemon refused.
    #[error("the daemon answered {status}: {code}: {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// Error code.
        code: String,
        /// Message.
        message: String,
    },
}

/// Where the daemon answers: its Unix socket, or its mutual-TLS listener.
#[derive(Clone)]
pub enum Endpoint {
    /// The local socket.
    Unix(PathBuf),
    /// `https://host:port` with this client's certificate.
    Tls {
        /// `host:port` to connect to.
        address: String,
        /// The name the server's certificate must carry.
        server_name: ServerName<'static>,
        /// The TLS client set-up.
        connector: tokio_rustls::TlsConnector,
    },
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(path) => write!(f, "{}", path.display()),
            Endpoint::Tls { address, .. } => write!(f, "https://{address}"),
        }
    }
}

impl Endpoint {
    /// The socket, or with `url` (`https://host:port`) the TLS listener, presenting the
    /// client certificate `cert` with its key `key` and trusting the CA in `ca` for the
    /// server.
    pub fn new(
        socket: &Path,
        url: Option<&str>,
        ca: Option<&Path>,
        cert: Option<&Path>,
        key: Option<&Path>,
    ) -> Result<Self, ClientError> {
        let Some(url) = url else {
            return Ok(Endpoint::Unix(socket.to_path_buf()));
        };
        let setup =
            |what: &str, e: &dyn std::fmt::Display| ClientError::Tls(format!("{what}: {e}"));
        let uri: hyper::Uri = url.parse().map_err(|e| setup("--url", &e))?;
        if uri.scheme_str() != Some("https") {
            return Err(ClientError::Tls("--url must be https://host:port".into()));
        }
        let host = uri
            .host()
            .ok_or_else(|| ClientError::Tls("--url has no host".into()))?;
        let address = format!("{host}:{}", uri.port_u16().unwrap_or(443));
        let (Some(ca), Some(cert), Some(key)) = (ca, cert, key) else {
            return Err(ClientError::Tls(
                "--url needs --tls-ca (the server's CA), --tls-cert and --tls-key (this client's pinned certificate)".into(),
            ));
        };
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(ca).map_err(|e| setup("--tls-ca", &e))? {
            roots
                .add(c.map_err(|e| setup("--tls-ca", &e))?)
                .map_err(|e| setup("--tls-ca", &e))?;
        }
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .map_err(|e| setup("--tls-cert", &e))?
            .collect::<Result<_, _>>()
            .map_err(|e| setup("--tls-cert", &e))?;
        let private = PrivateKeyDer::from_pem_file(key).map_err(|e| setup("--tls-key", &e))?;
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| setup("TLS versions", &e))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, private)
            .map_err(|e| setup("--tls-cert / --tls-key", &e))?;
        let server_name =
            ServerName::try_from(host.to_string()).map_err(|e| setup("--url host", &e))?;
        Ok(Endpoint::Tls {
            address,
            server_name,
            connector: tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)),
        })
    }
}

/// A keep-alive HTTP/1.1 connection to the daemon, on its socket or over mutual TLS.
pub async fn connect_to(endpoint: &Endpoint) -> Result<SendRequest<Full<Bytes>>, ClientError> {
    let (address, server_name, connector) = match endpoint {
        Endpoint::Unix(socket) => return connect(socket).await,
        Endpoint::Tls {
            address,
            server_name,
            connector,
        } => (address, server_name, connector),
    };
    let tcp = tokio::net::TcpStream::connect(address)
        .await
        .map_err(|source| ClientError::Connect {
            path: address.clone(),
            source,
        })?;
    let stream = connector
        .connect(server_name.clone(), tcp)
        .await
        .map_err(|e| ClientError::Tls(format!("handshake with {address}: {e}")))?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| ClientError::Http(e.to_string()))?;
    tokio::spawn(conn);
    Ok(sender)
}

/// A keep-alive HTTP/1.1 connection to the daemon's socket.
pub async fn connect(socket: &Path) -> Result<SendRequest<Full<Bytes>>, ClientError> {
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(|source| ClientError::Connect {
            path: socket.display().to_string(),
            source,
        })?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| ClientError::Http(e.to_string()))?;
    tokio::spawn(conn);
    Ok(sender)
}

/// Sends one request over the socket.
pub async fn request(
    endpoint: &Endpoint,
    method: &str,
    uri: &str,
    body: Option<serde_json::Value>,
) -> Result<Answer, ClientError> {
    let mut sender = connect_to(endpoint).await?;
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header("host", "hsm-signer")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(payload)))
        .map_err(|e| ClientError::Http(e.to_string()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| ClientError::Http(e.to_string()))?;
    let status = response.status().as_u16();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| ClientError::Http(e.to_string()))?
        .to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
        serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned())
    });
    Ok(Answer { status, body })
}

/// Asks the daemon to sign `input` (data, or a digest when `is_digest`) and returns the
/// raw signature bytes.
pub async fn sign(
    endpoint: &Endpoint,
    key: &str,
    algorithm: &str,
    input: &[u8],
    is_digest: bool,
    format: Option<&str>,
) -> Result<Vec<u8>, ClientError> {
    let encoded = base64::engine::general_purpose::STANDARD.encode(input);
    let mut body = serde_json::json!({ "algorithm": algorithm });
    body[if is_digest { "digest" } else { "data" }] = encoded.into();
    if let Some(format) = format {
        body["format"] = format.into();
    }
    let key_path: String = url_segment(key);
    let answer = request(
        endpoint,
        "POST",
        &format!("/v1/keys/{key_path}/sign"),
        Some(body),
    )
    .await?;
    if answer.status != 200 {
        return Err(refused(answer));
    }
    let signature = answer.body["signature"].as_str().unwrap_or_default();
    base64::engine::general_purpose::STANDARD
        .decode(signature)
        .map_err(|e| ClientError::Http(format!("the daemon's signature is not base64: {e}")))
}

/// Turns an error answer into a [`ClientError`].
pub fn refused(answer: Answer) -> ClientError {
    ClientError::Refused {
        status: answer.status,
        code: answer.body["error"]["code"]
            .as_str()
            .unwrap_or("?")
            .to_string(),
        message: answer.body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .to_string(),
    }
}

fn url_segment(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Which XML signature the daemon makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XmlProfile {
    /// WS-Security over a SOAP envelope (`/wss/sign`).
    Wss,
    /// An enveloped SAML signature (`/saml/sign`).
    Saml,
    /// Enveloped XAdES-BES over a whole document (`/xades/sign`).
    Xades,
}

/// Options of [`sign_xml`].
#[derive(Debug, Clone, Default)]
pub struct XmlSignOptions {
    /// The algorithm; `None` lets the daemon take the key's first allowed one.
    pub algorithm: Option<String>,
    /// SAML: the `ID` of the element to sign (`None`: the root).
    pub reference_id: Option<String>,
    /// WS-Security: add a signed Timestamp valid this many seconds.
    pub timestamp_ttl_seconds: Option<u32>,
    /// XAdES: the SigningCertificate's digest, `sha256` or `sha1` (`None`: SHA-256).
    pub certificate_digest: Option<String>,
    /// XAdES: the `ds:Signature`'s `Id` (`None`: a fresh one).
    pub signature_id: Option<String>,
}

/// Asks the daemon to sign the XML document `xml` and returns the signed document's
/// exact bytes, to be sent as they are.
pub async fn sign_xml(
    endpoint: &Endpoint,
    key: &str,
    profile: XmlProfile,
    xml: &str,
    options: &XmlSignOptions,
) -> Result<Vec<u8>, ClientError> {
    let (route, field) = match profile {
        XmlProfile::Wss => ("wss", "envelope"),
        XmlProfile::Saml => ("saml", "xml"),
        XmlProfile::Xades => ("xades", "xml"),
    };
    let mut body = serde_json::json!({ field: xml });
    if let Some(algorithm) = &options.algorithm {
        body["algorithm"] = algorithm.as_str().into();
    }
    if let Some(id) = &options.reference_id {
        body["reference_id"] = id.as_str().into();
    }
    if let Some(ttl) = options.timestamp_ttl_seconds {
        body["timestamp_ttl_seconds"] = ttl.into();
    }
    if let Some(digest) = &options.certificate_digest {
        body["certificate_digest"] = digest.as_str().into();
    }
    if let Some(id) = &options.signature_id {
        body["signature_id"] = id.as_str().into();
    }
    let uri = format!("/v1/keys/{}/{route}/sign", url_segment(key));
    let answer = request(endpoint, "POST", &uri, Some(body)).await?;
    if answer.status != 200 {
        return Err(refused(answer));
    }
    match profile {
        XmlProfile::Wss => answer.body["envelope"]
            .as_str()
            .map(|s| s.as_bytes().to_vec())
            .ok_or_else(|| ClientError::Http("the daemon's answer has no envelope".into())),
        XmlProfile::Saml | XmlProfile::Xades => {
            let encoded = answer.body["xml_base64"].as_str().unwrap_or_default();
            base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .map_err(|e| {
                    ClientError::Http(format!("the daemon's xml_base64 is not base64: {e}"))
                })
        }
    }
}
