#!/usr/bin/env python3
"""Builds a WK-style (login.gov.pl) encrypted assertion with Python `cryptography`, an
implementation independent of hsm-signer, and writes the ArtifactResponse in its SOAP
envelope the way WK sends it.

    wk_encrypt.py --cert RECIPIENT.pem --assertion PLAINTEXT --out OUT.xml [options]

The steps (XML Encryption 1.1 as WK runs them):
  ephemeral P-256 key; Z = ECDH(ephemeral, recipient);
  KEK = ConcatKDF(SHA-256, Z, AlgorithmID || PartyUInfo || PartyVInfo), each of the three
  a 4-byte big-endian length then the bytes, written as hex WITHOUT the padding-bits byte
  XML Encryption 1.1 describes (WK's real messages have none);
  content key wrapped with AES key wrap (RFC 3394);
  assertion encrypted with AES-GCM: IV (12) || ciphertext || tag (16), no AAD.

Options to make broken messages: --tamper tag|wrapped, --point offcurve|zero|p384,
--content-uri URI, --twice (two EncryptedAssertions), --other-recipient (encrypt to a
fresh key instead of CERT's), --shape soap|response|bare, --key-beside (EncryptedKey
beside EncryptedData instead of inside its KeyInfo).
"""

import argparse
import base64
import os
import struct

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.concatkdf import ConcatKDFHash
from cryptography.hazmat.primitives.keywrap import aes_key_wrap

KW = {
    256: "http://www.w3.org/2001/04/xmlenc#kw-aes256",
    128: "http://www.w3.org/2001/04/xmlenc#kw-aes128",
}
GCM_256 = "http://www.w3.org/2009/xmlenc11#aes256-gcm"
P = 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF


def length_prefixed(text):
    data = text.encode("utf-8")
    return struct.pack(">I", len(data)) + data


def uncompressed(public_key):
    return public_key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


def encrypted_assertion(args, recipient, plaintext):
    ephemeral = ec.generate_private_key(ec.SECP256R1())
    z = ephemeral.exchange(ec.ECDH(), recipient)
    kw_bits = args.kw_bits
    algorithm_id = length_prefixed(KW[kw_bits])
    party_u = length_prefixed(args.party_u)
    party_v = length_prefixed(args.party_v)
    kek = ConcatKDFHash(
        algorithm=hashes.SHA256(),
        length=kw_bits // 8,
        otherinfo=algorithm_id + party_u + party_v,
    ).derive(z)
    content_key = os.urandom(args.content_bits // 8)
    wrapped = bytearray(aes_key_wrap(kek, content_key))
    iv = os.urandom(12)
    cipher = bytearray(iv + AESGCM(content_key).encrypt(iv, plaintext, None))
    if args.tamper == "tag":
        cipher[-1] ^= 0x01
    elif args.tamper == "wrapped":
        wrapped[10] ^= 0x01
    point = uncompressed(ephemeral.public_key())
    curve_urn = "urn:oid:1.2.840.10045.3.1.7"
    if args.point == "offcurve":
        y = int.from_bytes(point[33:], "big")
        point = point[:33] + ((y + 1) % P).to_bytes(32, "big")
    elif args.point == "zero":
        point = b"\x04" + bytes(64)
    elif args.point == "p384":
        point = uncompressed(ec.generate_private_key(ec.SECP384R1()).public_key())
        curve_urn = "urn:oid:1.3.132.0.34"
    b64 = lambda b: base64.b64encode(bytes(b)).decode("ascii")
    # Line breaks inside base64, as Java's xmlsec writes them every 76 characters.
    wrap76 = lambda s: "\n".join(s[i : i + 76] for i in range(0, len(s), 76))
    encrypted_key = f"""<xenc:EncryptedKey xmlns:xenc="http://www.w3.org/2001/04/xmlenc#" Id="_ek{os.urandom(8).hex()}" Recipient="{args.party_v}"><xenc:EncryptionMethod Algorithm="{KW[kw_bits]}"/><ds:KeyInfo xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><xenc:AgreementMethod Algorithm="http://www.w3.org/2009/xmlenc11#ECDH-ES"><xenc11:KeyDerivationMethod xmlns:xenc11="http://www.w3.org/2009/xmlenc11#" Algorithm="http://www.w3.org/2009/xmlenc11#ConcatKDF"><xenc11:ConcatKDFParams AlgorithmID="{algorithm_id.hex().upper()}" PartyUInfo="{party_u.hex().upper()}" PartyVInfo="{party_v.hex().upper()}"><ds:DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/></xenc11:ConcatKDFParams></xenc11:KeyDerivationMethod><xenc:OriginatorKeyInfo><ds:KeyValue><dsig11:ECKeyValue xmlns:dsig11="http://www.w3.org/2009/xmldsig11#"><dsig11:NamedCurve URI="{curve_urn}"/><dsig11:PublicKey>{b64(point)}</dsig11:PublicKey></dsig11:ECKeyValue></ds:KeyValue></xenc:OriginatorKeyInfo></xenc:AgreementMethod></ds:KeyInfo><xenc:CipherData><xenc:CipherValue>{b64(wrapped)}</xenc:CipherValue></xenc:CipherData></xenc:EncryptedKey>"""
    inner_key = "" if args.key_beside else f'<ds:KeyInfo xmlns:ds="http://www.w3.org/2000/09/xmldsig#">{encrypted_key}</ds:KeyInfo>'
    beside = encrypted_key if args.key_beside else ""
    data = f"""<xenc:EncryptedData xmlns:xenc="http://www.w3.org/2001/04/xmlenc#" Id="_ed{os.urandom(8).hex()}" Type="http://www.w3.org/2001/04/xmlenc#Element"><xenc:EncryptionMethod Algorithm="{args.content_uri}"/>{inner_key}<xenc:CipherData><xenc:CipherValue>{wrap76(b64(cipher))}</xenc:CipherValue></xenc:CipherData></xenc:EncryptedData>"""
    return f"""<saml2:EncryptedAssertion xmlns:saml2="urn:oasis:names:tc:SAML:2.0:assertion">{data}{beside}</saml2:EncryptedAssertion>""", bytes(cipher)


def response(args, assertions):
    rid = "_r" + os.urandom(8).hex()
    return f"""<saml2p:Response xmlns:saml2p="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml2="urn:oasis:names:tc:SAML:2.0:assertion" ID="{rid}" InResponseTo="_req1" IssueInstant="2026-11-29T10:00:00.000Z" Version="2.0"><saml2:Issuer>{args.party_u}</saml2:Issuer><saml2p:Status><saml2p:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:Success"/></saml2p:Status>{"".join(assertions)}</saml2p:Response>"""


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--cert", required=True)
    parser.add_argument("--assertion", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--cipher-out", help="write EncryptedData's CipherValue bytes here")
    parser.add_argument("--content-bits", type=int, default=256, choices=[128, 256])
    parser.add_argument("--kw-bits", type=int, default=256, choices=[128, 256])
    parser.add_argument("--content-uri", default=GCM_256)
    parser.add_argument("--party-u", default="int.login.gov.pl")
    parser.add_argument("--party-v", default="https://e-urzad.gmina-przykladowo.pl/sp")
    parser.add_argument("--tamper", choices=["tag", "wrapped"])
    parser.add_argument("--point", choices=["offcurve", "zero", "p384"])
    parser.add_argument("--twice", action="store_true")
    parser.add_argument("--other-recipient", action="store_true")
    parser.add_argument("--key-beside", action="store_true")
    parser.add_argument("--shape", default="soap", choices=["soap", "response", "bare"])
    args = parser.parse_args()

    with open(args.cert, "rb") as f:
        recipient = x509.load_pem_x509_certificate(f.read()).public_key()
    if args.other_recipient:
        recipient = ec.generate_private_key(ec.SECP256R1()).public_key()
    with open(args.assertion, "rb") as f:
        plaintext = f.read()

    first, cipher = encrypted_assertion(args, recipient, plaintext)
    assertions = [first]
    if args.twice:
        assertions.append(encrypted_assertion(args, recipient, plaintext)[0])
    if args.shape == "bare":
        xml = "".join(assertions)
    elif args.shape == "response":
        xml = '<?xml version="1.0" encoding="UTF-8"?>\n' + response(args, assertions)
    else:
        xml = f"""<?xml version="1.0" encoding="UTF-8"?>
<soap11:Envelope xmlns:soap11="http://schemas.xmlsoap.org/soap/envelope/"><soap11:Body><saml2p:ArtifactResponse xmlns:saml2p="urn:oasis:names:tc:SAML:2.0:protocol" ID="_ar{os.urandom(8).hex()}" InResponseTo="_resolve1" IssueInstant="2026-11-29T10:00:00.000Z" Version="2.0"><saml2:Issuer xmlns:saml2="urn:oasis:names:tc:SAML:2.0:assertion">{args.party_u}</saml2:Issuer><saml2p:Status><saml2p:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:Success"/></saml2p:Status>{response(args, assertions)}</saml2p:ArtifactResponse></soap11:Body></soap11:Envelope>"""
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(xml)
    if args.cipher_out:
        with open(args.cipher_out, "wb") as f:
            f.write(cipher)


if __name__ == "__main__":
    main()
