"""Checks an enveloped XAdES-BES signature made by hsm-signer, for tests/xades.rs.

1. signxml's XAdESVerifier, given the certificate (x509_cert=) and expecting exactly two
   references: the document and SignedProperties. It checks both digests, the
   SignatureValue and the SigningCertificate's CertDigest.
2. What no verifier here checks, with lxml and `cryptography`: the shape issue 22 asks
   for (the ds:Signature is the document element's last child; Reference URI="" with the
   enveloped-signature and exc-c14n transforms; the SignedProperties Reference's Type;
   QualifyingProperties' Target), SigningTime (UTC, within the window given), the
   CertDigest (recomputed here with the digest named), IssuerSerial (the issuer's RFC 4514
   string, rebuilt here from `cryptography`'s parse of the certificate; the decimal serial), and that the signed document with its ds:Signature
   removed canonicalises (C14N 1.0) to the same bytes as the input.

usage: verify_xades.py SIGNED.xml CERT.pem INPUT.xml sha256|sha1 NOT_BEFORE NOT_AFTER
       (the times as RFC 3339 UTC, e.g. 2026-12-07T15:00:00Z)
Exit 0 only when all of it holds.
"""

import base64
import datetime
import hashlib
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from lxml import etree
from signxml.xades import XAdESSignatureConfiguration, XAdESVerifier

DS = "http://www.w3.org/2000/09/xmldsig#"
XADES = "http://uri.etsi.org/01903/v1.3.2#"
NS = {"ds": DS, "xades": XADES}
EXC_C14N = "http://www.w3.org/2001/10/xml-exc-c14n#"
ENVELOPED = "http://www.w3.org/2000/09/xmldsig#enveloped-signature"
DIGESTS = {
    "sha256": ("http://www.w3.org/2001/04/xmlenc#sha256", hashes.SHA256()),
    "sha1": ("http://www.w3.org/2000/09/xmldsig#sha1", hashes.SHA1()),
}


# RFC 4514 section 3's keywords; any other type is written as its dotted OID with the
# value's DER in hex (section 2.4), as Java's X500Principal RFC2253 form does.
# cryptography's rfc4514_string() writes those values as text, so it serves for these only.
KEYWORDS = {
    "2.5.4.3", "2.5.4.7", "2.5.4.8", "2.5.4.10", "2.5.4.11", "2.5.4.6", "2.5.4.9",
    "0.9.2342.19200300.100.1.25", "0.9.2342.19200300.100.1.1",
}
STRING_TAGS = {"UTF8String": 0x0C, "PrintableString": 0x13}


def rfc4514(name):
    rdns = []
    for rdn in reversed(name.rdns):
        parts = []
        for attr in rdn:
            if attr.oid.dotted_string in KEYWORDS:
                parts.append(attr.rfc4514_string())
            else:
                raw = attr.value.encode()
                check(len(raw) < 128, "a short value (this helper writes short DER lengths only)")
                der = bytes([STRING_TAGS[attr._type.name], len(raw)]) + raw
                parts.append(f"{attr.oid.dotted_string}=#{der.hex()}")
        rdns.append("+".join(parts))
    return ",".join(rdns)


def check(condition, what):
    if not condition:
        raise SystemExit(f"FAILED: {what}")


def one(node, path):
    found = node.findall(path, NS)
    check(len(found) == 1, f"exactly one {path} (found {len(found)})")
    return found[0]


def utc(text):
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def main():
    signed_path, cert_path, input_path, digest_name, not_before, not_after = sys.argv[1:7]
    signed_bytes = open(signed_path, "rb").read()
    pem = open(cert_path, "rb").read()
    cert = x509.load_pem_x509_certificate(pem)

    # 1. signxml.
    config = XAdESSignatureConfiguration(expect_references=2)
    results = XAdESVerifier().verify(signed_bytes, x509_cert=pem.decode(), expect_config=config)
    check(len(results) == 2, f"signxml verified {len(results)} references")
    print("signxml XAdESVerifier: OK (2 references)")

    # 2. The shape.
    root = etree.fromstring(signed_bytes)
    last = root[-1]
    check(last.tag == f"{{{DS}}}Signature", "ds:Signature is the document element's last child")
    check(len(root.findall(".//ds:Signature", NS)) == 1, "one ds:Signature in the document")
    sig_id = last.get("Id")
    check(sig_id, "the Signature has an Id")
    refs = last.findall("ds:SignedInfo/ds:Reference", NS)
    check(len(refs) == 2, "two References")
    doc_ref, props_ref = refs
    check(doc_ref.get("URI") == "", 'the first Reference has URI=""')
    transforms = [t.get("Algorithm") for t in doc_ref.findall("ds:Transforms/ds:Transform", NS)]
    check(transforms == [ENVELOPED, EXC_C14N], f"document transforms {transforms}")
    check(
        props_ref.get("Type") == "http://uri.etsi.org/01903#SignedProperties",
        "the SignedProperties Reference's Type",
    )
    props = one(last, "ds:Object/xades:QualifyingProperties/xades:SignedProperties")
    check(props_ref.get("URI") == "#" + props.get("Id"), "the second Reference points at SignedProperties")
    qp = props.getparent()
    check(qp.get("Target") == "#" + sig_id, "QualifyingProperties Target is #" + sig_id)
    for ref in refs:
        method = one(ref, "ds:DigestMethod").get("Algorithm")
        check(method == DIGESTS["sha256"][0], f"Reference digest {method}")

    # SigningTime: UTC, within the window.
    ssp = one(props, "xades:SignedSignatureProperties")
    signing_time = one(ssp, "xades:SigningTime").text
    check(signing_time.endswith("Z"), f"SigningTime {signing_time} in UTC")
    check(
        utc(not_before) <= utc(signing_time) <= utc(not_after),
        f"SigningTime {signing_time} within {not_before} .. {not_after}",
    )

    # SigningCertificate v1: CertDigest and IssuerSerial.
    check(ssp.find("xades:SigningCertificateV2", NS) is None, "no SigningCertificateV2")
    cert_node = one(ssp, "xades:SigningCertificate/xades:Cert")
    uri, algorithm = DIGESTS[digest_name]
    method = one(cert_node, "xades:CertDigest/ds:DigestMethod").get("Algorithm")
    check(method == uri, f"CertDigest method {method}, expected {uri}")
    value = base64.b64decode(one(cert_node, "xades:CertDigest/ds:DigestValue").text)
    check(value == cert.fingerprint(algorithm), f"CertDigest is the {digest_name} of the certificate")
    issuer = one(cert_node, "xades:IssuerSerial/ds:X509IssuerName").text
    check(issuer == rfc4514(cert.issuer), f"X509IssuerName {issuer!r} == {rfc4514(cert.issuer)!r}")
    serial = one(cert_node, "xades:IssuerSerial/ds:X509SerialNumber").text
    check(serial == str(cert.serial_number), f"X509SerialNumber {serial} == {cert.serial_number}")
    key_info = one(last, "ds:KeyInfo/ds:X509Data/ds:X509Certificate").text
    check(base64.b64decode(key_info) == cert.public_bytes(Encoding.DER),
          "KeyInfo holds the certificate")

    # With the signature removed, the document is the input.
    root.remove(last)
    unsigned = etree.tostring(root.getroottree(), method="c14n")
    original = etree.tostring(etree.parse(input_path), method="c14n")
    check(unsigned == original, "the signed document less its ds:Signature canonicalises as the input")
    print(
        f"lxml + cryptography: OK (SigningTime {signing_time}, CertDigest {digest_name} "
        f"{hashlib.sha256(value).hexdigest()[:8]}..., IssuerSerial {issuer!r} {serial}, c14n equal)"
    )


main()
