"""Turns scripts/bench's JSON lines into the generated section of docs/performance.md.

Reads docs/performance.md and replaces what lies between the BEGIN and END markers (the
whole file when they are missing); prints the result on stdout.
"""
import json
import os
import platform
import statistics
import subprocess
import sys

results_file, starts_file, audit_lines, floor_lines, secs, load = sys.argv[1:7]
rows = [json.loads(line) for line in open(results_file) if line.strip()]
starts = [json.loads(line) for line in open(starts_file) if line.strip()]
rounds = sorted({r["round"] for r in rows})
BEGIN = "<!-- BEGIN scripts/bench: generated, do not edit by hand -->"
END = "<!-- END scripts/bench -->"


def pick(rnd, path, alg, parallel, endpoint="sign"):
    for r in rows:
        if (r["round"] == rnd and r["path"] == path and r["algorithm"] == alg
                and r["parallel"] == parallel and r.get("endpoint", "sign") == endpoint):
            return r
    return None


def best_direct(rnd, alg):
    direct = [r for r in rows if r["round"] == rnd and r["path"] == "token" and r["algorithm"] == alg]
    return max(direct, key=lambda r: r["per_second"])


def us_per_op(r, key):
    return r.get(key, 0) * 1e6 / max(r["ops"], 1)


def med(values):
    return statistics.median(values)


def cpu_model():
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def softhsm_version():
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "softhsm2"], capture_output=True, text=True)
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


out = []
w = out.append
w(BEGIN)
w("")
w(f"Each figure is the median of {len(rounds)} rounds; each round measures every row for {secs} s, in")
w("this order: the token directly, then for each endpoint and client count the floor and the")
w("daemon back to back. Latencies are per request as the client saw them. Input: a 1 KiB")
w("SignedInfo as `data` to `sign`; a ~4 KiB TpUserInfo envelope to `wss/sign`; a ~4 KiB WK")
w("AuthnRequest to `saml/sign`; the claims of an e-Doręczenia client assertion as the JSON")
w("`payload` of `jws/sign`; KSeF's `AuthTokenRequest` to `xades/sign`.")
w("")
w(f"- CPU: {cpu_model()}, {os.cpu_count()} cores; kernel {platform.release()}; SoftHSM2 {softhsm_version()}.")
w(f"- Load average when the report was written: {load}. Other jobs share this machine, so")
w("  absolute figures move from run to run; the ratios below are taken within one round.")
w("- The client, the server and SoftHSM share the same cores.")
w("")
w("### Rows")
w("")
w("**floor**: `hsm-signer bench floor`, the daemon's router, listener, policy and audit log with a")
w("null signer (software keys; the benchmark's constant input is signed once and the signature")
w("reused), so no token call and no hand-off to another thread. CPU µs/op: the server's CPU per")
w("request (from /proc) + the client's; for direct runs, the signing process's CPU per signature.")
w("**floor + hand-off**: the same, with each job run on tokio's blocking pool within its deadline,")
w("as the daemon runs its token calls: the difference to the floor is what the hand-off costs.")
w("")
w("| path | endpoint | algorithm | parallel | sign/s | p50 ms | p99 ms | CPU µs/op |")
w("|---|---|---|---:|---:|---:|---:|---:|")
keys = []
for r in rows:
    k = (r["path"], r.get("endpoint", "sign"), r["algorithm"], r["parallel"])
    if k not in keys:
        keys.append(k)
order = {"token": 0, "floor": 1, "handoff": 2, "daemon": 3}
keys.sort(key=lambda k: (order[k[0]], k[1], k[2], k[3]))
for path, endpoint, alg, parallel in keys:
    rs = [pick(n, path, alg, parallel, endpoint) for n in rounds]
    rs = [r for r in rs if r]
    rate = med([r["per_second"] for r in rs])
    p50 = med([r["p50_ms"] for r in rs])
    p99 = med([r["p99_ms"] for r in rs])
    if path == "token":
        cpu = f"{med([us_per_op(r, 'cpu_seconds') for r in rs]):.0f}"
        shown = ("direct PKCS#11", "")
    else:
        cpu = f"{med([us_per_op(r, 'server_cpu_seconds') for r in rs]):.0f} + {med([us_per_op(r, 'cpu_seconds') for r in rs]):.0f}"
        shown = ("floor + hand-off" if path == "handoff" else path, f"`{endpoint}`")
    w(f"| {shown[0]} | {shown[1]} | {alg} | {parallel} | {rate:.0f} | {p50:.3f} | {p99:.3f} | {cpu} |")
w("")

# The targets, each computed per round, then the median.
checks = []


def added_latency(endpoint, alg):
    """(added ms, floor p50 ms, ratio) per round: daemon p50 minus 1/rate of the direct
    single-thread run, against the floor's p50 (1 client)."""
    per = []
    for n in rounds:
        d, f, t = pick(n, "daemon", alg, 1, endpoint), pick(n, "floor", alg, 1, endpoint), pick(n, "token", alg, 1)
        if d and f and t:
            added = d["p50_ms"] - 1000.0 / t["per_second"]
            per.append((added, f["p50_ms"], added / f["p50_ms"], d["p50_ms"], 1000.0 / t["per_second"]))
    return per


def latency_check(endpoint, alg, target):
    per = added_latency(endpoint, alg)
    if not per:
        return
    ratio = med([p[2] for p in per])
    checks.append((f"{alg} `{endpoint}` added latency, 1 client ≤ {target} × floor p50",
                   f"{med([p[3] for p in per]):.3f} − {med([p[4] for p in per]):.3f} = {med([p[0] for p in per]):.3f} ms vs floor {med([p[1] for p in per]):.3f} ms: "
                   f"{ratio:.2f} × (rounds: {', '.join(f'{p[2]:.2f}' for p in per)})",
                   ratio <= target))


def throughput_check(endpoint, alg, target):
    per = []
    for n in rounds:
        d = pick(n, "daemon", alg, 4, endpoint)
        if d:
            best = best_direct(n, alg)
            per.append((d["per_second"] / best["per_second"], d["per_second"], best["per_second"]))
    if not per:
        return
    ratio = med([p[0] for p in per])
    measured = f"{med([p[1] for p in per]):.0f} / {med([p[2] for p in per]):.0f} = {ratio:.2f} (rounds: {', '.join(f'{p[0]:.2f}' for p in per)})"
    if ratio > 1.0:
        # The daemon cannot outrun the token it calls: the direct runs were slowed down
        # by something else on the machine, and the ratio says nothing.
        measured += "; above 1, so the direct runs were disturbed: not evidence either way"
        checks.append((f"{alg} `{endpoint}` 4 clients ≥ {target} × best direct rate", measured, None))
        return
    checks.append((f"{alg} `{endpoint}` 4 clients ≥ {target} × best direct rate", measured, ratio >= target))


latency_check("sign", "ES256", 2)
throughput_check("sign", "RS256", 0.88)
throughput_check("sign", "ES256", 0.5)
peak = med([s["peak_kb"] for s in starts]) / 1024
idle = med([s["idle_kb"] for s in starts]) / 1024
ready = med([s["ready_ms"] for s in starts])
checks.append(("RSS under load ≤ 50 MiB", f"{peak:.1f} MiB (VmHWM after the round)", peak <= 50))
checks.append(("RSS idle ≤ 20 MiB", f"{idle:.1f} MiB (VmRSS 0.5 s after the first signature)", idle <= 20))
checks.append(("ready to sign ≤ 0.5 s", f"{ready:.0f} ms (spawn to the first 200 of `hsm-signer sign`)", ready <= 500))
# The same floor logic for the other rows: not targets of issue 14, shown to compare.
extra = []
for endpoint, alg in (("sign", "RS256"), ("wss", "RS256"), ("saml", "ES256"), ("jws", "ES256"), ("xades", "RS256")):
    before = len(checks)
    latency_check(endpoint, alg, 2)
    extra.extend(checks[before:])
    del checks[before:]
for endpoint, alg in (("wss", "RS256"), ("saml", "ES256"), ("jws", "ES256"), ("xades", "RS256")):
    before = len(checks)
    throughput_check(endpoint, alg, 0.5 if alg == "ES256" else 0.88)
    extra.extend(checks[before:])
    del checks[before:]

w("### Against the targets (issue 14)")
w("")
w("| target | measured (median of the rounds) | met |")
w("|---|---|---|")
def verdict(ok, strong=True):
    if ok is None:
        return "unknown"
    if ok:
        return "yes"
    return "**no**" if strong else "no"


for name, measured, ok in checks:
    w(f"| {name} | {measured} | {verdict(ok)} |")
w("")
w("The same logic for the other rows (for comparison; the XML rows add the XML work to both")
w("the floor and the daemon, and the direct rate is a bare signature):")
w("")
w("| measure | measured | within |")
w("|---|---|---|")
for name, measured, ok in extra:
    w(f"| {name} | {measured} | {verdict(ok, strong=False)} |")
w("")

w("### Where the time goes (medians)")
w("")
w("Latency at 1 client, `sign`: the floor, what the hand-off to the blocking pool adds (floor +")
w("hand-off − floor), the token's time (1/rate of the direct single-thread run), and the rest")
w("(daemon − all three: session pool, the token call's own wake-up after a real signature).")
w("")
w("| algorithm | daemon p50 | floor p50 | hand-off | token | rest |")
w("|---|---:|---:|---:|---:|---:|")
for alg in ("ES256", "RS256"):
    per = []
    for n in rounds:
        d, f, h, t = (pick(n, "daemon", alg, 1), pick(n, "floor", alg, 1),
                      pick(n, "handoff", alg, 1), pick(n, "token", alg, 1))
        if d and f and h and t:
            token = 1000.0 / t["per_second"]
            per.append((d["p50_ms"], f["p50_ms"], h["p50_ms"] - f["p50_ms"], token,
                        d["p50_ms"] - h["p50_ms"] - token))
    if per:
        m = [med([p[i] for p in per]) * 1000 for i in range(5)]
        w(f"| {alg} | {m[0]:.0f} µs | {m[1]:.0f} µs | {m[2]:.0f} µs | {m[3]:.0f} µs | {m[4]:.0f} µs |")
w("")
w("CPU from /proc at 4 clients:")
w("")
cores = os.cpu_count() or 1
for endpoint, alg in (("sign", "RS256"), ("sign", "ES256"), ("wss", "RS256"), ("saml", "ES256"), ("jws", "ES256"), ("xades", "RS256")):
    per = []
    for n in rounds:
        d, f = pick(n, "daemon", alg, 4, endpoint), pick(n, "floor", alg, 4, endpoint)
        h = pick(n, "handoff", alg, 4, endpoint)
        t1, best = pick(n, "token", alg, 1), best_direct(n, alg)
        if not (d and f and t1):
            continue
        per.append(dict(
            sign=us_per_op(t1, "cpu_seconds"),
            daemon=us_per_op(d, "server_cpu_seconds"), client=us_per_op(d, "cpu_seconds"),
            floor=us_per_op(f, "server_cpu_seconds"), rate=d["per_second"], best=best["per_second"],
            handoff=us_per_op(h, "server_cpu_seconds") - us_per_op(f, "server_cpu_seconds") if h else float("nan")))
    if not per:
        continue
    m = {k: med([p[k] for p in per]) for k in per[0]}
    ceiling = cores * 1e6 / (m["daemon"] + m["client"])
    extra_us = m["daemon"] - m["sign"] - m["floor"]
    w(f"- **{alg} `{endpoint}`.** A signature costs the token {m['sign']:.0f} µs of CPU (direct, one thread).")
    w(f"  A request costs the daemon {m['daemon']:.0f} µs: the signature, the floor's {m['floor']:.0f} µs")
    handoff = "" if m["handoff"] != m["handoff"] else f", of which the hand-off alone costs {m['handoff']:.0f} µs in the floor"
    w(f"  (HTTP, JSON{', XML' if endpoint != 'sign' else ''}, hashing, audit), and {extra_us:.0f} µs more (hand-off to the")
    w(f"  blocking thread and back, the session pool, scheduling{handoff}); the client {m['client']:.0f} µs. On {cores}")
    w(f"  cores shared by all three that allows at most {ceiling:.0f} requests/s, {ceiling / m['best']:.2f} × the best")
    w(f"  direct rate ({m['best']:.0f}/s); the run reached {m['rate']:.0f}/s ({m['rate'] / ceiling:.0%} of that ceiling).")
w("")
w(f"Every request was audited: {audit_lines.strip()} lines written by the daemon and {floor_lines.strip()} by")
w("the floor, both chains verified with `hsm-signer audit verify`. Each client's first and last")
w("answer of every run was checked (`sign` and `jws`: the signature verified against the key's")
w("certificate; XML: the certificate named), one `wss`, one `saml` and one `xades` answer of each")
w("server per run were verified with xmlsec1, and one `jws` answer with Python's jwcrypto.")
w("")
w(END)

generated = "\n".join(out)
path = os.path.join(os.path.dirname(__file__), "..", "docs", "performance.md")
try:
    current = open(path).read()
except OSError:
    current = ""
if BEGIN in current and END in current:
    head, rest = current.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    print(head + generated + tail, end="")
else:
    print("# Performance\n\n" + generated)
