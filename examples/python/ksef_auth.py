#!/usr/bin/env python3
"""Signs KSeF's AuthTokenRequest with XAdES-BES through hsm-signer (xades/sign), sending
the document itself (`Content-Type: application/xml`): the unsigned request goes in, the
signed one comes out byte for byte, ready for KSeF's `POST /auth/xades-signature`. No XML
crypto here, and no private key in this process. Standard library only (sign.py's
http.client over AF_UNIX).

    python3 ksef_auth.py [--socket PATH] [--key ksef] AUTH_TOKEN_REQUEST.xml > signed.xml

What the daemon says about the signature (X-Hsm-Signer-* headers: signature-id,
signing-time, algorithm, ...) goes to standard error. A refusal is JSON, as for every
endpoint, e.g. "hsm-signer answered 422 already_signed: ...". See docs/ksef.md.
"""

import argparse
import json
import os
import sys

from sign import DEFAULT_SOCKET, HsmSignerError, UnixHTTPConnection, quote


def sign_xades(socket_path, key, document):
    """POSTs `document` (bytes) to xades/sign of `key`; returns the signed bytes and the
    X-Hsm-Signer-* headers (lower case, without the prefix)."""
    conn = UnixHTTPConnection(socket_path, timeout=30)
    try:
        conn.request(
            "POST",
            f"/v1/keys/{quote(key)}/xades/sign",
            body=document,
            headers={"Content-Type": "application/xml"},
        )
        response = conn.getresponse()
        answer = response.read()
        if response.status != 200:
            try:
                error = json.loads(answer)["error"]
            except (ValueError, KeyError, TypeError):
                error = {"code": "unknown", "message": answer.decode(errors="replace")}
            raise HsmSignerError(response.status, error["code"], error["message"])
        meta = {
            name.lower()[len("x-hsm-signer-"):]: value
            for name, value in response.getheaders()
            if name.lower().startswith("x-hsm-signer-")
        }
        return answer, meta
    finally:
        conn.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--socket", default=os.environ.get("HSM_SIGNER_SOCKET", DEFAULT_SOCKET))
    parser.add_argument("--key", default="ksef")
    parser.add_argument("request", help="the unsigned AuthTokenRequest (UTF-8)")
    args = parser.parse_args()
    with open(args.request, "rb") as f:
        document = f.read()
    try:
        signed, meta = sign_xades(args.socket, args.key, document)
    except (HsmSignerError, OSError) as e:
        print(f"ksef_auth.py: {e}", file=sys.stderr)
        return 1
    for name, value in meta.items():
        print(f"{name}: {value}", file=sys.stderr)
    # Final bytes: send exactly these to KSeF.
    sys.stdout.buffer.write(signed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
