"""A stub OIDC token endpoint for the e-Doręczenia examples: it takes a client_credentials
request authenticated with an RFC 7523 client assertion, as e-Doręczenia's token endpoint
does (COI-Projekt-Techniczny-UA-API, 4.3.1), and verifies the assertion with Python's
jwcrypto, a JOSE implementation this project did not write, against the certificate it is
given:

    python3 oidc_stub.py CERT.pem CLIENT_ID

It listens on 127.0.0.1 on a random port, prints its token URL
(http://127.0.0.1:PORT/oauth2/token) as the first line of standard output, and serves
until it is killed. A request is accepted when grant_type is client_credentials,
client_assertion_type is jwt-bearer, and the assertion verifies with the certificate's key
(RS256, PS256 or ES256) with iss = sub = CLIENT_ID, aud = the token URL, exp in the future
and at most 300 s after iat, and a jti not seen before. Then it answers as an OIDC server
does: 200 {"access_token", "token_type": "Bearer", "expires_in"}. Otherwise 401
{"error": "invalid_client", "error_description"} (400 "invalid_request" for a request that
is not a client-credentials one). Each decision goes to standard error, one line each."""

import json
import secrets
import sys
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography import x509
from jwcrypto import jwk, jwt

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
PATH = "/oauth2/token"


class Endpoint(BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        form = urllib.parse.parse_qs(self.rfile.read(length).decode("ascii"))
        field = lambda name: (form.get(name) or [""])[0]
        if self.path != PATH:
            return self.answer(404, {"error": "invalid_request", "error_description": "no such path"})
        if field("grant_type") != "client_credentials" or field("client_assertion_type") != JWT_BEARER:
            return self.answer(400, {"error": "invalid_request", "error_description": "not a client_credentials request with a jwt-bearer assertion"})
        try:
            claims = self.server.check(field("client_assertion"), field("client_id"))
        except Exception as e:  # jwcrypto raises its own types for each failed check
            return self.answer(401, {"error": "invalid_client", "error_description": f"{type(e).__name__}: {e}"})
        self.answer(200, {"access_token": secrets.token_urlsafe(32), "token_type": "Bearer", "expires_in": 300, "scope": claims.get("scope", "")})

    def answer(self, status, body):
        text = json.dumps(body).encode()
        print(f"{status} {body.get('error', 'ok')} {body.get('error_description', '')}", file=sys.stderr, flush=True)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(text)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(text)

    def log_message(self, *args):
        pass


class Server(ThreadingHTTPServer):
    def __init__(self, cert_pem, client_id):
        super().__init__(("127.0.0.1", 0), Endpoint)
        with open(cert_pem, "rb") as f:
            cert = x509.load_pem_x509_certificate(f.read())
        self.key = jwk.JWK.from_pyca(cert.public_key())
        self.client_id = client_id
        self.url = f"http://127.0.0.1:{self.server_address[1]}{PATH}"
        self.seen = set()

    def check(self, assertion, client_id):
        if client_id and client_id != self.client_id:
            raise ValueError("client_id is not the assertion's client")
        token = jwt.JWT(
            jwt=assertion,
            key=self.key,
            algs=["RS256", "PS256", "ES256"],
            check_claims={"iss": self.client_id, "sub": self.client_id, "aud": self.url, "exp": None, "iat": None, "jti": None},
        )
        claims = json.loads(token.claims)
        if not 0 < claims["exp"] - claims["iat"] <= 300:
            raise ValueError("the assertion lives longer than 300 s")
        if claims["jti"] in self.seen:
            raise ValueError("jti replayed")
        self.seen.add(claims["jti"])
        return claims


if __name__ == "__main__":
    server = Server(sys.argv[1], sys.argv[2])
    print(server.url, flush=True)
    server.serve_forever()
