"""Verifies compact JWS / JWT with Python's jwcrypto, a JOSE implementation this project
did not write. Same interface as tools/verifiers/verify_jose.mjs: a JSON array on stdin,
one item per token ({"jws", "alg", "cert_pem" | "jwk"}, and "client_id", "audience" to
check it as an RFC 7523 client assertion); a JSON array out with the protected header,
the payload (base64), the claims and the JWK's RFC 7638 thumbprint. A failed
verification raises, so the exit status is non-zero."""

import base64
import json
import sys

from cryptography import x509
from jwcrypto import jwk, jws, jwt

out = []
for item in json.load(sys.stdin):
    if "jwk" in item:
        key = jwk.JWK.from_json(json.dumps(item["jwk"]))
    else:
        cert = x509.load_pem_x509_certificate(item["cert_pem"].encode())
        key = jwk.JWK.from_pyca(cert.public_key())
    token = jws.JWS()
    token.deserialize(item["jws"])
    token.verify(key, alg=item["alg"])
    result = {
        "header": token.jose_header,
        "payload_base64": base64.b64encode(token.payload).decode(),
    }
    if "audience" in item:
        checked = jwt.JWT(
            jwt=item["jws"],
            key=key,
            algs=[item["alg"]],
            check_claims={
                "iss": item["client_id"],
                "sub": item["client_id"],
                "aud": item["audience"],
                "exp": None,
                "nbf": None,
                "iat": None,
                "jti": None,
            },
        )
        result["claims"] = json.loads(checked.claims)
    if "jwk" in item:
        result["thumbprint"] = key.thumbprint()
    out.append(result)
json.dump(out, sys.stdout)
