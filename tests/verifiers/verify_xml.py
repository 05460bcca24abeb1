#!/usr/bin/env python3
"""Verifies XML signatures made by hsm-signer with verifiers we did not write, and
prints WHAT each one found signed, not only that a signature is valid.

    verify_xml.py wss  SIGNED.xml CERT.pem BODY_ID [TIMESTAMP_ID]
    verify_xml.py saml SIGNED.xml CERT.pem ID

wss:  zeep.wsse.signature.verify_envelope (python-xmlsec underneath), then signxml with
      the exact number of references expected: the Body (by its wsu:Id) and, when
      TIMESTAMP_ID is given, the wsu:Timestamp.
saml: signxml, one reference, to the element whose ID is ID.

Every verifier runs even if an earlier one rejects; each prints "<name>: OK ..." or
"<name>: REJECTED ...". The exit status is 0 only if all accepted and every check on
what was signed held.
"""

import sys

from lxml import etree
from signxml import XMLVerifier

WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
SOAP = {
    "http://schemas.xmlsoap.org/soap/envelope/": "SOAP 1.1",
    "http://www.w3.org/2003/05/soap-envelope": "SOAP 1.2",
}

failures = []


def fail(line):
    print(line)
    failures.append(line)


def local(el):
    return etree.QName(el).localname


def element_id(el):
    for name, value in el.attrib.items():
        if etree.QName(name).localname in ("Id", "ID"):
            return value
    return None


def run_signxml(data, cert, expected):
    """expected: {id: check(element) -> description}."""
    try:
        results = XMLVerifier().verify(data, x509_cert=cert, expect_references=len(expected))
    except Exception as e:  # signxml raises several exception types
        fail(f"signxml: REJECTED ({type(e).__name__}: {str(e)[:120]})")
        return
    if not isinstance(results, list):  # one reference: signxml returns it alone
        results = [results]
    seen = set()
    for result in results:
        el = result.signed_xml
        ident = element_id(el)
        if ident not in expected:
            fail(f"signxml: unexpected reference to {local(el)} Id={ident}")
            continue
        seen.add(ident)
        description = expected[ident](el)
        if description is None:
            fail(f"signxml: reference #{ident} is not the element expected ({local(el)})")
        else:
            print(f"signxml: OK reference #{ident} -> {description}")
    missing = set(expected) - seen
    if missing:
        fail(f"signxml: references missing: {sorted(missing)}")


def check_body(el):
    if local(el) != "Body" or etree.QName(el).namespace not in SOAP:
        return None
    payload = [local(c) for c in el if isinstance(c.tag, str)]
    return f"{SOAP[etree.QName(el).namespace]} Body, payload {payload}"


def check_timestamp(el):
    if local(el) != "Timestamp" or etree.QName(el).namespace != WSU:
        return None
    created = el.findtext(f"{{{WSU}}}Created")
    expires = el.findtext(f"{{{WSU}}}Expires")
    return f"wsu:Timestamp Created={created} Expires={expires}"


def check_saml(el):
    issuer = el.findtext("{urn:oasis:names:tc:SAML:2.0:assertion}Issuer")
    return f"{local(el)} Issuer={issuer}"


def verify_wss(path, cert_path, body_id, timestamp_id):
    from zeep.exceptions import SignatureVerificationFailed
    from zeep.wsse.signature import verify_envelope

    data = open(path, "rb").read()
    try:
        verify_envelope(etree.fromstring(data), cert_path)
        print("zeep: OK verify_envelope")
    except SignatureVerificationFailed:
        fail("zeep: REJECTED (SignatureVerificationFailed)")
    expected = {body_id: check_body}
    if timestamp_id:
        expected[timestamp_id] = check_timestamp
    run_signxml(data, open(cert_path).read(), expected)


def verify_saml(path, cert_path, ident):
    data = open(path, "rb").read()
    run_signxml(data, open(cert_path).read(), {ident: check_saml})


def main(argv):
    if len(argv) < 5:
        print(__doc__)
        return 2
    mode, path, cert = argv[1:4]
    if mode == "wss":
        verify_wss(path, cert, argv[4], argv[5] if len(argv) > 5 else None)
    elif mode == "saml":
        verify_saml(path, cert, argv[4])
    else:
        print(__doc__)
        return 2
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
