//! Opening a `.p12` (legacy RC2/3DES or PBES2), as `hsm-signer import` does with the file
//! an operator points it at. The password is the corpus files' own, so mutations reach
//! past the MAC (and MAC-less seeds reach the decryption and the bags).
#![no_main]

use libfuzzer_sys::fuzz_target;
use secrecy::SecretString;

fuzz_target!(|bytes: &[u8]| {
    let password = SecretString::from("hasło");
    if let Ok(material) = hsm_signer::p12::open(bytes, &password, "fuzz.p12") {
        // What import does next with the certificates it found.
        for cert in material.cert.iter().chain(material.chain.iter()) {
            let _ = hsm_signer::cert::CertInfo::of(cert);
            let _ = hsm_signer::cert::CertDer::of(cert).map(|d| d.default_id());
        }
    }
});
