#!/usr/bin/env python3
"""A TpUserInfo call to ePUAP signed with WS-Security by hsm-signer (wss/sign): the
unsigned SOAP 1.1 envelope goes in, the signed one comes out and is written as it is.
No XML crypto here. Standard library only (sign.py's http.client over AF_UNIX).

    python3 tpuserinfo.py [--socket PATH] [--key epuap] ENVELOPE.xml > signed.xml
"""

import argparse
import json
import os
import sys

from sign import DEFAULT_SOCKET, HsmSigner, HsmSignerError, quote


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--socket", default=os.environ.get("HSM_SIGNER_SOCKET", DEFAULT_SOCKET))
    parser.add_argument("--key", default="epuap")
    parser.add_argument("envelope", help="the unsigned SOAP envelope (UTF-8)")
    args = parser.parse_args()
    with open(args.envelope, encoding="utf-8") as f:
        body = {"envelope": f.read(), "timestamp_ttl_seconds": 300}
    signer = HsmSigner(args.socket)
    try:
        answer = signer.call("POST", f"/v1/keys/{quote(args.key)}/wss/sign", json.dumps(body).encode())
    except (HsmSignerError, OSError) as e:  # "hsm-signer answered 400 xml_doctype_forbidden: ..."
        print(f"tpuserinfo.py: {e}", file=sys.stderr)
        return 1
    finally:
        signer.close()
    # Final bytes: send exactly these (e.g. as the body of an HTTP POST to ePUAP).
    sys.stdout.buffer.write(json.loads(answer)["envelope"].encode("utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
