#!/usr/bin/env python3
"""A login.gov.pl (Węzeł Krajowy) AuthnRequest signed by hsm-signer (saml/sign, ES256 with
the WK key), printed as the HTTP-POST binding form for the citizen's browser. The form
value is the daemon's xml_base64: the signed bytes, untouched. Standard library only.

    python3 wk_authn_request.py [--socket PATH] [--key wk] [--issuer ID] [--destination URL] [--acs URL]
"""

import argparse
import json
import os
import secrets
import sys
import time
from html import escape

from sign import DEFAULT_SOCKET, HsmSigner, HsmSignerError, quote

AUTHN_REQUEST = (
    '<saml2p:AuthnRequest xmlns:saml2p="urn:oasis:names:tc:SAML:2.0:protocol"'
    ' xmlns:saml2="urn:oasis:names:tc:SAML:2.0:assertion"'
    ' xmlns:eidas="http://eidas.europa.eu/saml-extensions" ID="ID-{id}" Version="2.0"'
    ' IssueInstant="{now}" Destination="{destination}" AssertionConsumerServiceURL="{acs}"'
    ' ForceAuthn="true"><saml2:Issuer>{issuer}</saml2:Issuer>'
    "<saml2p:Extensions><eidas:SPType>public</eidas:SPType></saml2p:Extensions>"
    '<saml2p:NameIDPolicy AllowCreate="true"'
    ' Format="urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified"/></saml2p:AuthnRequest>'
)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--socket", default=os.environ.get("HSM_SIGNER_SOCKET", DEFAULT_SOCKET))
    parser.add_argument("--key", default="wk")
    parser.add_argument("--issuer", default="https://gsko.gmina.example")
    parser.add_argument("--destination", default="https://symulator.login.gov.pl/login/SingleSignOnService")
    parser.add_argument("--acs", default="https://gsko.gmina.example/wk/acs")
    args = parser.parse_args()
    request = AUTHN_REQUEST.format(
        id=secrets.token_hex(16),  # an xsd:ID must not start with a digit: hence "ID-"
        now=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        destination=escape(args.destination),
        acs=escape(args.acs),
        issuer=escape(args.issuer),
    )
    signer = HsmSigner(args.socket)
    try:
        body = json.dumps({"xml": request}).encode()
        answer = json.loads(signer.call("POST", f"/v1/keys/{quote(args.key)}/saml/sign", body))
    except (HsmSignerError, OSError) as e:  # "hsm-signer answered 403 forbidden: ..."
        print(f"wk_authn_request.py: {e}", file=sys.stderr)
        return 1
    finally:
        signer.close()
    print(f'<form method="post" action="{escape(args.destination)}">')
    print(f'  <input type="hidden" name="SAMLRequest" value="{answer["xml_base64"]}"/>')
    print("</form>")
    return 0


if __name__ == "__main__":
    sys.exit(main())
