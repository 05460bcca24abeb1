"""Large and hostile XML documents against a running daemon, for scripts/bench.

measure: sends an 8 MB envelope (6 MiB of random bytes in base64, MIME lines) to
`wss/sign` in the raw form and in JSON, times `xmlsec1 --sign` on the same envelope with
the key in a PEM file (its process start included), reads the daemon's idle and peak RSS,
then sends each attack shape and records its status, code and the daemon's CPU per
request (from /proc, after the daemon is idle again, so work that outlives a 503 counts).
Prints one JSON line per row.

report: turns those lines into the section of docs/performance.md between its XML markers
and prints the whole file.

  bench_xml.py measure --pid PID --socket SOCK --key NAME --cert CERT.pem --privkey KEY.pem --work DIR
      [--forms raw,json] [--no-shapes] [--repeat N]
  bench_xml.py report RESULTS.jsonl DOC.md
"""
import argparse
import base64
import http.client
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import time

SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
DS = "http://www.w3.org/2000/09/xmldsig#"
BEGIN = "<!-- BEGIN scripts/bench xml: generated, do not edit by hand -->"
END = "<!-- END scripts/bench xml -->"
MIB = 1024 * 1024
TICK = os.sysconf("SC_CLK_TCK")


class Unix(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=60)
        self.unix = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.unix)


def envelope(payload, header=""):
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<soapenv:Envelope xmlns:soapenv="{SOAP11}" '
            f'xmlns:wsu="{WSU}"><soapenv:Header>{header}</soapenv:Header>'
            f'<soapenv:Body wsu:Id="id-body-1">{payload}</soapenv:Body></soapenv:Envelope>\n')


def document_envelope(payload_bytes):
    encoded = base64.b64encode(os.urandom(payload_bytes)).decode()
    lines = "\n".join(encoded[i:i + 76] for i in range(0, len(encoded), 76))
    return envelope('<ns:addDocumentToSigning xmlns:ns="http://signing.ws.comarch.gov">'
                    f"<doc>{lines}</doc></ns:addDocumentToSigning>")


def xmlsec_template(doc):
    """The same envelope with a Signature template in wsse:Security, for xmlsec1 --sign."""
    template = (f'<wsse:Security xmlns:wsse="{WSSE}"><ds:Signature xmlns:ds="{DS}"><ds:SignedInfo>'
                '<ds:CanonicalizationMethod Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/>'
                '<ds:SignatureMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"/>'
                '<ds:Reference URI="#id-body-1"><ds:Transforms>'
                '<ds:Transform Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/></ds:Transforms>'
                '<ds:DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/>'
                '<ds:DigestValue/></ds:Reference></ds:SignedInfo><ds:SignatureValue/>'
                '<ds:KeyInfo><ds:X509Data/></ds:KeyInfo></ds:Signature></wsse:Security>')
    return doc.replace("<soapenv:Header></soapenv:Header>", f"<soapenv:Header>{template}</soapenv:Header>")


def shapes():
    """Each attack shape: name, what it is, the envelope."""
    polish = "Zażółć gęślą jaźń, źdźbło, łódź. "
    yield ("baseline", "the ~1 KiB TpUserInfo-like call, for the signature's own cost",
           envelope('<tpus:GetTpUserInfo xmlns:tpus="http://wsdl.tpuserinfo.epuap.gov.pl/"><callerId>gmina</callerId>'
                    f'<userId>jan.kowalski</userId><opis>{polish}</opis></tpus:GetTpUserInfo>'))
    decls = "".join(f' xmlns:n{i}="urn:n{i}"' for i in range(31000))
    uses = "".join(f"<n{i}:e/>" for i in range(31000))
    yield ("namespaces-31000", "31,000 declarations on one element, each used once (the issue's 940 KB attack)",
           envelope(f"<p{decls}>{uses}</p>"))
    uses = "".join(f"<n{i}:e/>" for i in range(60))
    yield ("namespaces-60-in-scope", "60 namespaces declared once, in scope at ~130,000 elements that use them (under every default limit), ~1 MiB",
           envelope("<p{}>{}</p>".format("".join(f' xmlns:n{i}="urn:n{i}"' for i in range(60)),
                                        uses * (MIB // len(uses)))))
    attrs = "<e{}/>".format("".join(f' a{i}="v"' for i in range(250)))
    yield ("attributes-250", "elements with 250 attributes each (under the default 256), ~1 MiB",
           envelope(attrs * (MIB // len(attrs))))
    yield ("attributes-100000", "one element with 100,000 attributes",
           envelope("<e{}/>".format("".join(f' a{i}="v"' for i in range(100000)))))
    deep = "<d>" * 60 + "x" + "</d>" * 60
    yield ("depth-62", "subtrees nested to a depth of 62 (under the default 64 with Envelope and Body), ~1 MiB",
           envelope(deep * (MIB // len(deep))))
    yield ("ids-40000", "40,000 elements with a wsu:Id each, ~1 MiB",
           envelope("".join(f'<e wsu:Id="i{i}"/>' for i in range(40000))))
    text = polish * (MIB // len(polish.encode()))
    yield ("polish-text-1MiB", "one text node of 1 MiB of Polish text (2-byte characters across every 16 KB boundary)",
           envelope(f"<opis>{text}</opis>"))


def ticks(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def rss_kb(pid, field):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def cpu_ns(pid):
    """The daemon's CPU time in nanoseconds, summed over its threads' schedstat (exact,
    where /proc/PID/stat counts 10 ms ticks; a thread that exits takes its share along,
    which idle_ticks below still counts)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            total += int(open(f"/proc/{pid}/task/{tid}/schedstat").read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total


def idle_cpu_ns(pid):
    """cpu_ns once the daemon stops using CPU (work may outlive its answer)."""
    last = cpu_ns(pid)
    while True:
        time.sleep(0.2)
        now = cpu_ns(pid)
        if now - last < 1_000_000:
            return now
        last = now


def idle_ticks(pid):
    """The daemon's CPU ticks once it stops using CPU (work may outlive its answer)."""
    last = ticks(pid)
    while True:
        time.sleep(0.3)
        now = ticks(pid)
        if now == last:
            return now
        last = now


def post(sock, path, body, content_type):
    conn = Unix(sock)
    t0 = time.perf_counter()
    conn.request("POST", path, body, {"Content-Type": content_type})
    answer = conn.getresponse()
    data = answer.read()
    elapsed = time.perf_counter() - t0
    conn.close()
    code = ""
    if answer.status != 200:
        try:
            code = json.loads(data)["error"]["code"]
        except (ValueError, KeyError):
            code = "?"
    return answer.status, code, elapsed, data


def measure(args):
    pid, sock = args.pid, args.socket
    path = f"/v1/keys/{args.key}/wss/sign"
    idle = rss_kb(pid, "VmRSS")
    doc = document_envelope(6 * MIB)
    raw = doc.encode()
    forms = [("raw", raw, "application/xml"), ("json", json.dumps({"envelope": doc}).encode(), "application/json")]
    for form, body, content_type in forms:
        if form not in args.forms.split(","):
            continue
        before = idle_ticks(pid)
        times, cpus, statuses, last = [], [], set(), b""
        for _ in range(args.repeat):
            start = idle_cpu_ns(pid)
            status, code, elapsed, last = post(sock, path, body, content_type)
            cpus.append((idle_cpu_ns(pid) - start) / 1e6)
            statuses.add(f"{status} {code}".strip())
            times.append(elapsed)
        cpu = (idle_ticks(pid) - before) / TICK
        if form == "raw":
            open(os.path.join(args.work, "xml-8mb.signed.xml"), "wb").write(last)
        # VmHWM only grows: after the raw requests it is their peak; after the JSON ones, the
        # peak of both.
        print(json.dumps({"row": "8mb", "form": form, "bytes": len(raw), "requests": len(times),
                          "status": " / ".join(sorted(statuses)), "median_ms": statistics.median(times) * 1e3,
                          "min_ms": min(times) * 1e3, "daemon_cpu_ms": cpu * 1e3 / len(times),
                          "cpu_median_ms": statistics.median(cpus), "cpu_min_ms": min(cpus),
                          "peak_kb": rss_kb(pid, "VmHWM")}), flush=True)
    peak = rss_kb(pid, "VmHWM")
    print(json.dumps({"row": "rss", "idle_kb": idle, "peak_kb": peak, "document_bytes": len(raw),
                      "load": " ".join(f"{x:.2f}" for x in os.getloadavg())}), flush=True)
    if "raw" in args.forms.split(","):
        signed = os.path.join(args.work, "xml-8mb.signed.xml")
        verified = subprocess.run(["xmlsec1", "--verify", "--id-attr:Id", f"{SOAP11}:Body",
                                   "--pubkey-cert-pem", args.cert, signed], capture_output=True)
        if verified.returncode != 0:
            sys.exit("xmlsec1 does not verify the daemon's 8 MB answer: " + verified.stderr.decode())
    template = os.path.join(args.work, "xml-8mb.template.xml")
    open(template, "w").write(xmlsec_template(doc))
    times, cpus = [], []
    for _ in range(args.repeat):
        used = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        subprocess.run(["xmlsec1", "--sign", "--privkey-pem", f"{args.privkey},{args.cert}",
                        "--id-attr:Id", f"{SOAP11}:Body", "--output", template + ".signed", template],
                       check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append((after.ru_utime + after.ru_stime - used.ru_utime - used.ru_stime) * 1e3)
    subprocess.run(["xmlsec1", "--verify", "--id-attr:Id", f"{SOAP11}:Body", "--pubkey-cert-pem", args.cert,
                    template + ".signed"], check=True, capture_output=True)
    print(json.dumps({"row": "xmlsec1", "bytes": len(raw), "requests": len(times),
                      "median_ms": statistics.median(times) * 1e3, "min_ms": min(times) * 1e3,
                      "cpu_median_ms": statistics.median(cpus), "cpu_min_ms": min(cpus)}), flush=True)
    for name, what, doc in shapes() if args.shapes else ():
        body = doc.encode()
        form = ("application/xml", body) if "raw" in args.forms.split(",") else ("application/json", json.dumps({"envelope": doc}).encode())
        before = idle_ticks(pid)
        started, times, cpus, statuses = time.perf_counter(), [], [], set()
        while len(times) < args.repeat and (not times or time.perf_counter() - started < 3):
            start = idle_cpu_ns(pid)
            status, code, elapsed, _ = post(sock, path, form[1], form[0])
            cpus.append((idle_cpu_ns(pid) - start) / 1e6)
            statuses.add(f"{status} {code}".strip())
            times.append(elapsed)
        cpu = (idle_ticks(pid) - before) / TICK
        print(json.dumps({"row": "shape", "name": name, "what": what, "bytes": len(body), "requests": len(times),
                          "status": " / ".join(sorted(statuses)), "median_ms": statistics.median(times) * 1e3,
                          "daemon_cpu_ms": cpu * 1e3 / len(times),
                          "cpu_median_ms": statistics.median(cpus), "cpu_min_ms": min(cpus)}), flush=True)


def report(args):
    rows = [json.loads(line) for line in open(args.results) if line.strip()]
    eight = {r["form"]: r for r in rows if r["row"] == "8mb"}
    rss = next(r for r in rows if r["row"] == "rss")
    xmlsec = next((r for r in rows if r["row"] == "xmlsec1"), None)
    out = [BEGIN, ""]
    w = out.append
    size = rss["document_bytes"]
    w(f"Measured on commit {args.commit}, against a fresh daemon with the default settings (`[token]")
    w(f"sessions` = twice the CPUs), one request at a time; medians of {eight[next(iter(eight))]['requests']} requests. Load average")
    w(f"after the 8 MB requests: {rss.get('load', '?')}; other jobs share the 2 cores, so wall times move a lot.")
    w("Daemon CPU is read from /proc once the daemon is idle again, so work that outlives its answer")
    w("counts: per request from its threads' schedstat (nanoseconds), median and minimum. On a shared")
    w("machine the CPU a request takes moves less than its wall time, and the minimum is the closest to")
    w("the work itself. xmlsec1's CPU is its process's user and system time.")
    w("")
    w(f"**An {size / 1e6:.1f} MB envelope** (6 MiB of random bytes in base64, 76-character lines, in the Body):")
    w("")
    w("| | wall time, median (min) | CPU, median (min) | status |")
    w("|---|---|---|---|")
    ms = lambda r, key: f"{r[key + 'median_ms']:.0f} ms ({r[key + 'min_ms']:.0f} ms)" if key + "median_ms" in r else ""
    for form in ("raw", "json"):
        if form in eight:
            r = eight[form]
            label = "daemon, `application/xml`" if form == "raw" else "daemon, JSON"
            w(f"| {label} | {ms(r, '')} | {ms(r, 'cpu_')} | {r['status']} |")
    if xmlsec:
        w(f"| `xmlsec1 --sign`, key in a PEM file, process start included | {ms(xmlsec, '')} | {ms(xmlsec, 'cpu_')} | |")
    w("")
    if xmlsec and "raw" in eight:
        r = eight["raw"]
        ratio = r["median_ms"] / xmlsec["median_ms"]
        w(f"- Time, raw form: {ratio:.2f} × xmlsec1's wall time, medians ({r['min_ms'] / xmlsec['min_ms']:.2f} × min to min;"
          f" target: at most 1.0 ×) {'— met' if ratio <= 1.0 else '— not met'}.")
        if "cpu_median_ms" in r and "cpu_median_ms" in xmlsec:
            w(f"- CPU, raw form: {r['cpu_median_ms'] / xmlsec['cpu_median_ms']:.2f} × xmlsec1's, medians"
              f" ({r['cpu_min_ms'] / xmlsec['cpu_min_ms']:.2f} × min to min).")
    for form in ("raw", "json"):
        if form not in eight or "peak_kb" not in eight[form]:
            continue
        grown = (eight[form]["peak_kb"] - rss["idle_kb"]) * 1024
        after = "the raw requests" if form == "raw" else ("the raw and the JSON requests" if "raw" in eight else "the JSON requests")
        w(f"- Memory after {after}: idle RSS {rss['idle_kb'] / 1024:.0f} MiB, peak (VmHWM) {eight[form]['peak_kb'] / 1024:.0f} MiB,"
          f" {grown / size:.1f} × the document's size above idle (target: at most 6 ×)"
          f" {'— met' if grown <= 6 * size else '— not met'}.")
    w("")
    w("**Attack shapes**, each sent as the Body's payload until 5 requests or 3 s; \"beyond the")
    w("signature\" subtracts the baseline request's CPU (which includes SoftHSM's RSA-2048")
    w("signature and the HTTP and audit work), median from median and minimum from minimum.")
    w("Target: at most 100 ms per MiB beyond the signature.")
    w("")
    w("| shape | size | status | daemon CPU per request, median (min) | beyond the signature, per MiB, median (min) |")
    w("|---|---|---|---|---|")
    shapes_ = [r for r in rows if r["row"] == "shape"]
    base = next((r for r in shapes_ if r["name"] == "baseline"), None)
    for r in shapes_:
        if "cpu_median_ms" not in r:
            r["cpu_median_ms"] = r["cpu_min_ms"] = r["daemon_cpu_ms"]
        mib = r["bytes"] / MIB
        if r["name"] == "baseline" or base is None:
            per_mib = ""
        else:
            per_mib = (f"{max(r['cpu_median_ms'] - base.get('cpu_median_ms', base['daemon_cpu_ms']), 0) / mib:.0f} ms"
                       f" ({max(r['cpu_min_ms'] - base.get('cpu_min_ms', base['daemon_cpu_ms']), 0) / mib:.0f} ms)")
        w(f"| {r['name']}: {r['what']} | {r['bytes'] / 1024:.0f} KiB | {r['status']} |"
          f" {r['cpu_median_ms']:.1f} ms ({r['cpu_min_ms']:.1f} ms) | {per_mib} |")
    w("")
    w(END)
    generated = "\n".join(out)
    current = open(args.doc).read()
    if BEGIN in current and END in current:
        head, rest = current.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        print(head + generated + tail, end="")
    else:
        print(current.rstrip("\n") + "\n\n## Large and hostile XML documents\n\n" + generated)


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="mode", required=True)
    m = sub.add_parser("measure")
    for flag in ("--socket", "--key", "--cert", "--privkey", "--work"):
        m.add_argument(flag, required=True)
    m.add_argument("--pid", type=int, required=True)
    m.add_argument("--repeat", type=int, default=5)
    m.add_argument("--forms", default="raw,json",
                   help="which forms to send the 8 MB envelope in; the shapes go raw unless only json (a daemon before the raw form)")
    m.add_argument("--no-shapes", dest="shapes", action="store_false")
    r = sub.add_parser("report")
    r.add_argument("results")
    r.add_argument("doc")
    r.add_argument("--commit", default="?")
    args = parser.parse_args()
    measure(args) if args.mode == "measure" else report(args)


if __name__ == "__main__":
    main()
