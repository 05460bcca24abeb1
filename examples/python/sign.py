#!/usr/bin/env python3
"""Signs XML-DSig SignedInfo bytes through the hsm-signer daemon, and fetches the
certificate for KeyInfo. Standard library only (http.client over AF_UNIX).

    python3 sign.py [--socket PATH] [--key NAME] sign [--algorithm RS256] [--digest] [FILE]
    python3 sign.py [--socket PATH] [--key NAME] certificate [--format base64|pem|der]

`sign` reads the exc-c14n bytes of SignedInfo from FILE (or standard input) and prints
the base64 SignatureValue. With --digest it hashes them here and sends only the digest.
For ECDSA (ES256, login.gov.pl) the signature is raw r||s, as XML-DSig wants it.

`certificate` prints the key's certificate: base64 DER for KeyInfo/X509Data/
X509Certificate or a WS-Security BinarySecurityToken (default), PEM with the chain, or
DER bytes.

--socket defaults to $HSM_SIGNER_SOCKET, then /run/hsm-signer/hsm-signer.sock; --key to
$HSM_SIGNER_KEY, then "epuap". See docs/integration.md.
"""

import argparse
import base64
import hashlib
import http.client
import json
import os
import re
import socket
import sys
import time
import urllib.parse

DEFAULT_SOCKET = "/run/hsm-signer/hsm-signer.sock"
HASHES = {"1": hashlib.sha1, "256": hashlib.sha256, "384": hashlib.sha384, "512": hashlib.sha512}


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTPConnection whose transport is a Unix socket; the host name is only a header."""

    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class HsmSignerError(Exception):
    """The daemon refused: HTTP status, stable error code, message."""

    def __init__(self, status, code, message):
        super().__init__(f"hsm-signer answered {status} {code}: {message}")
        self.status, self.code = status, code


class HsmSigner:
    """A client for the daemon. It keeps one connection alive between calls, and
    reconnects once when the daemon has closed it (idle connections are closed after
    read_timeout_ms, 5 s by default)."""

    def __init__(self, path, budget=10.0):
        # budget: seconds one call may take, retries on 503 included.
        self.path, self.budget = path, budget
        self.conn = None

    def sign(self, key, algorithm, data=None, digest=None):
        """Returns the daemon's answer: signature (base64), algorithm_uri,
        certificate_sha256, ..."""
        body = {"algorithm": algorithm}
        if digest is not None:
            body["digest"] = base64.b64encode(digest).decode()
        else:
            body["data"] = base64.b64encode(data).decode()
        answer = self.call("POST", f"/v1/keys/{quote(key)}/sign", json.dumps(body).encode())
        return json.loads(answer)

    def certificate(self, key, fmt="base64"):
        return self.call("GET", f"/v1/keys/{quote(key)}/certificate?format={quote(fmt)}")

    def call(self, method, path, body=None):
        deadline = time.monotonic() + self.budget
        while True:
            status, retry_after, answer = self.exchange(method, path, body, deadline)
            if status == 200:
                return answer
            try:
                error = json.loads(answer)["error"]
            except (ValueError, KeyError, TypeError):
                error = {"code": "unknown", "message": answer.decode(errors="replace")}
            wait = retry_after if retry_after is not None else 1
            if status != 503 or time.monotonic() + wait >= deadline:
                raise HsmSignerError(status, error["code"], error["message"])
            print(f"hsm-signer busy ({error['code']}); retrying in {wait} s", file=sys.stderr)
            time.sleep(wait)

    def exchange(self, method, path, body, deadline):
        headers = {"Content-Type": "application/json"} if body is not None else {}
        for attempt in (1, 2):
            timeout = max(0.001, deadline - time.monotonic())
            if self.conn is None:
                self.conn = UnixHTTPConnection(self.path, timeout)
            self.conn.timeout = timeout
            if self.conn.sock is not None:
                self.conn.sock.settimeout(timeout)
            try:
                try:
                    self.conn.request(method, path, body=body, headers=headers)
                except (BrokenPipeError, ConnectionResetError):
                    # The daemon may refuse (403, 404, 413) before reading the whole
                    # body, then close: its answer is still there to read.
                    pass
                response = self.conn.getresponse()
                answer = response.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                # The daemon closed a kept-alive connection; signing has no side effect
                # but an audit line, so one retry on a fresh connection is safe.
                self.close()
                if attempt == 2:
                    raise
                continue
            except BaseException:
                self.close()
                raise
            retry_after = response.getheader("Retry-After")
            if response.will_close:
                self.close()
            return response.status, int(retry_after) if retry_after else None, answer
        raise AssertionError("unreachable")

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def quote(text):
    return urllib.parse.quote(text, safe="")


def hash_for(algorithm):
    """The hash an algorithm name (RS256, ES256, PS384, RS1, ...) or XML-DSig URI uses."""
    match = re.fullmatch(r"[A-Za-z]{2}(\d+)", algorithm) or re.search(r"sha(\d+)", algorithm)
    if match and match.group(1) in HASHES:
        return HASHES[match.group(1)]
    raise SystemExit(f"sign.py: cannot tell the hash of {algorithm!r} for --digest")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--socket", default=os.environ.get("HSM_SIGNER_SOCKET", DEFAULT_SOCKET))
    parser.add_argument("--key", default=os.environ.get("HSM_SIGNER_KEY", "epuap"))
    commands = parser.add_subparsers(dest="command", required=True)
    sign = commands.add_parser("sign", help="sign SignedInfo bytes, print base64 SignatureValue")
    sign.add_argument("--algorithm", default="RS256", help="RS256, ES256, ... or XML-DSig URI")
    sign.add_argument("--digest", action="store_true", help="hash here, send only the digest")
    sign.add_argument("file", nargs="?", help="SignedInfo bytes [default: standard input]")
    cert = commands.add_parser("certificate", help="print the key's certificate")
    cert.add_argument("--format", default="base64", choices=["base64", "pem", "der"])
    args = parser.parse_args()

    signer = HsmSigner(args.socket)
    try:
        if args.command == "sign":
            if args.file:
                with open(args.file, "rb") as f:
                    data = f.read()
            else:
                data = sys.stdin.buffer.read()
            if args.digest:
                answer = signer.sign(args.key, args.algorithm, digest=hash_for(args.algorithm)(data).digest())
            else:
                answer = signer.sign(args.key, args.algorithm, data=data)
            print(answer["signature"])
        else:
            certificate = signer.certificate(args.key, args.format)
            if args.format == "base64":
                certificate += b"\n"
            sys.stdout.buffer.write(certificate)
    except HsmSignerError as e:
        print(f"sign.py: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"sign.py: cannot talk to hsm-signer at {args.socket}: {e} "
              "(is the daemon running, and may this user open the socket?)", file=sys.stderr)
        return 1
    finally:
        signer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
