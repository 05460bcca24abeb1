#!/usr/bin/env python3
"""Gets an e-Doręczenia access token with a client assertion signed by hsm-signer: the
daemon builds and signs the RFC 7523 assertion (jwt/client-assertion) with the key on the
token, and this script sends it to the token endpoint with OIDC client_credentials. No
private key and no JOSE code here. Standard library only (sign.py's http.client over
AF_UNIX for the daemon, urllib for the token endpoint).

    python3 edoreczenia_token.py [--socket PATH] [--key edoreczenia] [--audience URL] \\
        --client-id ID TOKEN_URL

Prints the token endpoint's JSON answer ({"access_token", "token_type", "expires_in"}).
The assertion's audience is TOKEN_URL unless --audience says otherwise. See
docs/edoreczenia.md.
"""

import argparse
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request

from sign import DEFAULT_SOCKET, HsmSigner, HsmSignerError, quote

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def client_assertion(socket_path, key, client_id, audience):
    """A fresh assertion from the daemon (one per token request: its jti is single-use)."""
    signer = HsmSigner(socket_path)
    try:
        body = json.dumps({"client_id": client_id, "audience": audience}).encode()
        answer = signer.call("POST", f"/v1/keys/{quote(key)}/jwt/client-assertion", body)
    finally:
        signer.close()
    return json.loads(answer)["jws"]


def access_token(token_url, client_id, assertion):
    """The token endpoint's answer to a client_credentials request with the assertion."""
    form = urllib.parse.urlencode({
        "grant_type": "client_credentials",
        "client_id": client_id,
        "client_assertion_type": JWT_BEARER,
        "client_assertion": assertion,
    }).encode()
    request = urllib.request.Request(token_url, data=form, headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)
    except urllib.error.HTTPError as e:  # {"error": "invalid_client", ...}
        raise RuntimeError(f"the token endpoint answered {e.code}: {e.read().decode(errors='replace')}") from None


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--socket", default=os.environ.get("HSM_SIGNER_SOCKET", DEFAULT_SOCKET))
    parser.add_argument("--key", default="edoreczenia")
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--audience", help="the assertion's aud (default: TOKEN_URL)")
    parser.add_argument("token_url")
    args = parser.parse_args()
    try:
        assertion = client_assertion(args.socket, args.key, args.client_id, args.audience or args.token_url)
        token = access_token(args.token_url, args.client_id, assertion)
    except (HsmSignerError, OSError, RuntimeError) as e:
        print(f"edoreczenia_token.py: {e}", file=sys.stderr)
        return 1
    json.dump(token, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
