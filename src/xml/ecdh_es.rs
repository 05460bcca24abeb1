//! The cryptography of WK's encrypted assertion, in the order XML Encryption 1.1 runs it:
//! check the ephemeral point, Z from the token (a closure), ConcatKDF(SHA-256) to the
//! KEK, AES key unwrap (RFC 3394) of the content key, AES-GCM of the content.
//!
//! Every secret on the way (Z, KEK, content key, plaintext) sits in [`Zeroizing`]. Every
//! failure after the point check is the one [`DecryptError::Crypto`], so the answer is
//! no oracle for which step failed.

use openssl::bn::BigNumContext;
use openssl::ec::{EcGroup, EcPoint};
use openssl::nid::Nid;
use openssl::symm::Cipher;
use zeroize::Zeroizing;

use super::enc::{DecryptError, KeyWrap, WkEncrypted};

/// AES-GCM as XML Encryption 1.1 uses it: a 96-bit IV first, a 128-bit tag last.
const GCM_IV_LEN: usize = 12;
const GCM_TAG_LEN: usize = 16;

/// A decrypted assertion.
pub struct Decrypted {
    /// The plaintext, exactly as encrypted.
    pub plaintext: Zeroizing<Vec<u8>>,
    /// The content key's size in bits (128 or 256), taken from the unwrapped key.
    pub content_key_bits: usize,
}

/// Checks that `point` is an uncompressed point on P-256 and not the identity, before
/// any token sees it (an invalid-curve point could leak bits of the private key).
pub fn check_p256_point(point: &[u8]) -> Result<(), String> {
    let refuse = || "the ephemeral public key is not a point on P-256".to_string();
    if point.len() != 65 || point[0] != 0x04 {
        return Err(refuse());
    }
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).map_err(|_| refuse())?;
    let mut ctx = BigNumContext::new().map_err(|_| refuse())?;
    let parsed = EcPoint::from_bytes(&group, point, &mut ctx).map_err(|_| refuse())?;
    let on_curve = parsed.is_on_curve(&group, &mut ctx).unwrap_or(false);
    if !on_curve || parsed.is_infinity(&group) {
        return Err(refuse());
    }
    Ok(())
}

/// Decrypts `enc`, asking `derive` for Z = ECDH(our key, the checked ephemeral point).
pub fn decrypt<E>(
    enc: &WkEncrypted,
    derive: impl FnOnce(&[u8]) -> Result<Zeroizing<Vec<u8>>, E>,
) -> Result<Decrypted, DecryptError<E>> {
    check_p256_point(&enc.ephemeral_point).map_err(DecryptError::Structure)?;
    let z = derive(&enc.ephemeral_point).map_err(DecryptError::Token)?;
    let kek = concat_kdf_sha256(&z, &enc.other_info, enc.wrap.kek_len());
    drop(z);
    // The caller hears one answer for every failure; the operator's log (debug) says
    // which step failed, never with a secret.
    let content_key = unwrap(enc.wrap, &kek, &enc.wrapped_key).ok_or_else(|| {
        tracing::debug!(
            wrapped_bytes = enc.wrapped_key.len(),
            "AES key unwrap failed (another recipient, or a damaged EncryptedKey)"
        );
        DecryptError::Crypto
    })?;
    drop(kek);
    let plaintext = gcm_open(&content_key, &enc.ciphertext).ok_or_else(|| {
        tracing::debug!(
            ciphertext_bytes = enc.ciphertext.len(),
            content_key_bits = content_key.len() * 8,
            "AES-GCM authentication failed (damaged EncryptedData)"
        );
        DecryptError::Crypto
    })?;
    Ok(Decrypted {
        plaintext,
        content_key_bits: content_key.len() * 8,
    })
}

/// NIST SP 800-56A ConcatKDF with SHA-256: one round is enough for a KEK of at most 32
/// bytes, so KEK = SHA-256(00000001 ‖ Z ‖ OtherInfo), truncated to `len`.
fn concat_kdf_sha256(z: &[u8], other_info: &[u8], len: usize) -> Zeroizing<Vec<u8>> {
    let mut hasher = openssl::sha::Sha256::new();
    hasher.update(&1u32.to_be_bytes());
    hasher.update(z);
    hasher.update(other_info);
    let mut out = Zeroizing::new(hasher.finish().to_vec());
    out.truncate(len);
    out
}

/// RFC 3394 unwrap; `None` on any failure (wrong KEK, wrong length).
fn unwrap(wrap: KeyWrap, kek: &[u8], wrapped: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    // A content key of 16 or 32 bytes: 24 or 40 bytes wrapped.
    if wrapped.len() != 24 && wrapped.len() != 40 {
        return None;
    }
    let key = openssl::aes::AesKey::new_decrypt(kek).ok()?;
    debug_assert_eq!(kek.len(), wrap.kek_len());
    let mut out = Zeroizing::new(vec![0u8; wrapped.len() - 8]);
    openssl::aes::unwrap_key(&key, None, &mut out, wrapped).ok()?;
    Some(out)
}

/// AES-GCM open of IV (12) ‖ ciphertext ‖ tag (16), no AAD; the key size picks
/// AES-128 or AES-256 (WK has sent a 128-bit key under the aes256-gcm URI).
fn gcm_open(key: &[u8], data: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let cipher = match key.len() {
        16 => Cipher::aes_128_gcm(),
        32 => Cipher::aes_256_gcm(),
        _ => return None,
    };
    if data.len() < GCM_IV_LEN + GCM_TAG_LEN {
        return None;
    }
    let (iv, rest) = data.split_at(GCM_IV_LEN);
    let (ciphertext, tag) = rest.split_at(rest.len() - GCM_TAG_LEN);
    openssl::symm::decrypt_aead(cipher, key, Some(iv), &[], ciphertext, tag)
        .ok()
        .map(Zeroizing::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 3394 §4.6: 256-bit key data wrapped with a 256-bit KEK.
    #[test]
    fn unwrap_matches_rfc3394() {
        let kek = hex::decode("000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F")
            .expect("hex");
        let wrapped = hex::decode(
            "28C9F404C4B810F4CBCCB35CFB87F8263F5786E2D80ED326CBC7F0E71A99F43BFB988B9B7A02DD21",
        )
        .expect("hex");
        let key = unwrap(KeyWrap::Aes256, &kek, &wrapped).expect("unwraps");
        assert_eq!(
            hex::encode_upper(&*key),
            "00112233445566778899AABBCCDDEEFF000102030405060708090A0B0C0D0E0F"
        );
        let mut bad = wrapped.clone();
        bad[5] ^= 1;
        assert!(unwrap(KeyWrap::Aes256, &kek, &bad).is_none());
    }

    /// Python `cryptography`'s ConcatKDFHash(SHA256) with Z = 00 01 … 1f and WK's
    /// OtherInfo (length-prefixed kw-aes256 URI, int.login.gov.pl, an SP entity id), used
    /// as is: no padding-bits byte added or dropped.
    #[test]
    fn concat_kdf_matches_python_cryptography() {
        let z: Vec<u8> = (0u8..32).collect();
        let other_info = hex::decode(concat!(
            "0000002a687474703a2f2f7777772e77332e6f72672f323030312f30342f786d6c656e63236b772d61657332353600000010696e742e6c6f67696e2e676f762e706c",
            "0000002768747470733a2f2f652d75727a61642e676d696e612d70727a796b6c61646f776f2e706c2f7370"
        ))
        .expect("hex");
        assert_eq!(
            hex::encode(&*concat_kdf_sha256(&z, &other_info, 32)),
            "93902d20eb0771d81d335b8ab7fb19680603ffe13f388d4efd10d6f01870fb78"
        );
        assert_eq!(
            hex::encode(&*concat_kdf_sha256(&z, &other_info, 16)),
            "93902d20eb0771d81d335b8ab7fb1968"
        );
    }

    #[test]
    fn off_curve_and_identity_points_are_refused() {
        let mut point = vec![0x04];
        point.extend([0u8; 64]);
        assert!(check_p256_point(&point).is_err());
        point[64] = 1;
        assert!(check_p256_point(&point).is_err());
        assert!(check_p256_point(&[0x00]).is_err());
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).expect("group");
        let key = openssl::ec::EcKey::generate(&group).expect("key");
        let mut ctx = BigNumContext::new().expect("ctx");
        let good = key
            .public_key()
            .to_bytes(
                &group,
                openssl::ec::PointConversionForm::UNCOMPRESSED,
                &mut ctx,
            )
            .expect("bytes");
        assert!(check_p256_point(&good).is_ok());
    }
}
