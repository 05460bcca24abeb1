#!/usr/bin/env python3
"""Signs a SOAP envelope for ePUAP through hsm-signer on another host, over mutual TLS.

    python3 mtls_wss.py https://hsm.gmina.local:8443 server-ca.pem gsko-web1.pem gsko-web1.key \
        epuap unsigned.xml > signed.xml

The signed envelope is written byte for byte as the daemon made it: send it as it is.
"""
import http.client
import json
import ssl
import sys
from urllib.parse import urlsplit


def main(url, ca, cert, key, key_name, envelope_file):
    target = urlsplit(url)
    context = ssl.create_default_context(cafile=ca)
    context.load_cert_chain(cert, key)
    conn = http.client.HTTPSConnection(target.hostname, target.port or 443, context=context, timeout=10)
    with open(envelope_file, encoding="utf-8") as f:
        body = json.dumps({"envelope": f.read()})
    conn.request("POST", f"/v1/keys/{key_name}/wss/sign", body, {"Content-Type": "application/json"})
    response = conn.getresponse()
    answer = json.loads(response.read())
    if response.status != 200:
        error = answer.get("error", {})
        print(f"hsm-signer answered {response.status} {error.get('code')}: {error.get('message')}", file=sys.stderr)
        return 1
    sys.stdout.buffer.write(answer["envelope"].encode("utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:7]))
