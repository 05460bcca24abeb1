//! Reading a certificate file (DER `.cer` or PEM) and describing it, as `import --cert`,
//! `list` and the daemon's key endpoints do: OpenSSL parses, then the RustCrypto DER
//! parser re-reads what OpenSSL re-encoded.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(cert) = hsm_signer::cert::load_cert_bytes(bytes) {
        let _ = hsm_signer::cert::CertInfo::of(&cert);
        let _ = hsm_signer::cert::CertDer::of(&cert).map(|d| d.default_id());
    }
});
