//! The body of `POST /v1/keys/{name}/sign`, as a hostile caller may send it, through the
//! same decoding the handler runs before it touches the token. Besides not panicking, an
//! accepted body must yield an allowed algorithm, a digest of that algorithm's length and
//! DER only for ECDSA; a refused one must be a 4xx.
#![no_main]

use hsm_signer::algorithm::{Algorithm, Scheme, ALL};
use hsm_signer::server::sign_route::decode_sign_request;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    // What a default key allows: everything but the legacy RSA-SHA1.
    let allowed: Vec<Algorithm> = ALL.into_iter().filter(|a| *a != Algorithm::Rs1).collect();
    match decode_sign_request(body, "epuap", &allowed) {
        Ok(decoded) => {
            assert!(allowed.contains(&decoded.algorithm));
            assert_eq!(decoded.digest.len(), decoded.algorithm.hash().output_len());
            assert!(!decoded.der || decoded.algorithm.scheme() == Scheme::Ecdsa);
        }
        Err(e) => assert!(e.status.is_client_error(), "{e:?}"),
    }
});
