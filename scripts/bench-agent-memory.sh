#!/usr/bin/env bash
# The real agent's memory at many Services (issue #12: <= 150 MB at 30,000 Services / 120,000
# endpoints), measured on a one-node `ferry up` cluster of the release build.
#
#   sudo scripts/bench-agent-memory.sh [--services 30000] [--endpoints 4] [--clients 12]
#                                      [--proxy ebpf|iptables] [--samples 7] [--interval 10]
#                                      [--name NAME] [--state-dir DIR] [--deadline-seconds 1200]
#
# 1. `ferry up --nodes 1 --service-proxy <proxy>` under its own --name and --state-dir (removed
#    with `ferry down` on every exit path: the trap below).
# 2. Selector-less Services (one TCP port 80 -> 8080), each with one EndpointSlice of N ready
#    IPv4 endpoints (distinct addresses from 10.200.0.0/14), created through the API by C
#    concurrent clients (HTTP/1.1 keep-alive, the kubeconfig's token); the create rate is
#    printed every 1,000 Services.
# 3. Waits until the agent's `ferry_service_frontends` metric reaches the Service count (its
#    metrics endpoint, read inside the node's network namespace), then samples the agent's and
#    ferry-server's VmRSS / VmHWM (`/proc/<pid>/status`) S times, every I seconds, and prints
#    median [min-max] in MiB, plus the agent's idle figures taken before the load.
#
# Needs root (ferry up), python3, and target/release/{ferry,ferry-server,ferry-agent,...}
# (`cargo build --release --bins`). Nothing outside the cluster's namespaces is touched.
set -euo pipefail

SERVICES=30000
ENDPOINTS=4
CLIENTS=12
PROXY=ebpf
SAMPLES=7
INTERVAL=10
NAME="fmem$$"
STATE_DIR="/run/ferry/bench-agent-memory"
DEADLINE=1200

while [ $# -gt 0 ]; do
    case "$1" in
        --services) SERVICES="$2"; shift 2 ;;
        --endpoints) ENDPOINTS="$2"; shift 2 ;;
        --clients) CLIENTS="$2"; shift 2 ;;
        --proxy) PROXY="$2"; shift 2 ;;
        --samples) SAMPLES="$2"; shift 2 ;;
        --interval) INTERVAL="$2"; shift 2 ;;
        --name) NAME="$2"; shift 2 ;;
        --state-dir) STATE_DIR="$2"; shift 2 ;;
        --deadline-seconds) DEADLINE="$2"; shift 2 ;;
        -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
for n in "$SERVICES" "$ENDPOINTS" "$CLIENTS" "$SAMPLES" "$INTERVAL" "$DEADLINE"; do
    [[ "$n" =~ ^[1-9][0-9]*$ ]] || { echo "not a positive number: $n" >&2; exit 2; }
done
[ "$PROXY" = ebpf ] || [ "$PROXY" = iptables ] || { echo "--proxy: ebpf or iptables" >&2; exit 2; }
[ "$((SERVICES * ENDPOINTS))" -le 262144 ] || { echo "at most 262,144 endpoints (10.200.0.0/14)" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "needs root (ferry up)" >&2; exit 1; }

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
FERRY="$ROOT/target/release/ferry"
for b in ferry ferry-server ferry-agent ferry-kubelet ferry-cni; do
    [ -x "$ROOT/target/release/$b" ] || { echo "target/release/$b is not built: cargo build --release --bins" >&2; exit 1; }
done
CLUSTER="$STATE_DIR/$NAME"

down() {
    "$FERRY" down --name "$NAME" --state-dir "$STATE_DIR" >/dev/null 2>&1 \
        || echo "warning: ferry down --name $NAME --state-dir $STATE_DIR failed" >&2
    # The state directory goes too when this run left it empty (it may hold other clusters).
    rmdir "$STATE_DIR" 2>/dev/null || true
}
trap down EXIT

echo "== ferry up --nodes 1 --service-proxy $PROXY (--name $NAME --state-dir $STATE_DIR)"
"$FERRY" up --name "$NAME" --state-dir "$STATE_DIR" --nodes 1 --api-port 0 \
    --service-proxy "$PROXY" >/dev/null

export CLUSTER SERVICES ENDPOINTS CLIENTS SAMPLES INTERVAL DEADLINE
python3 - <<'EOF'
import base64, http.client, json, os, ssl, statistics, subprocess, sys, tempfile, threading, time

cluster = os.environ["CLUSTER"]
services, per, clients = (int(os.environ[k]) for k in ("SERVICES", "ENDPOINTS", "CLIENTS"))
samples, interval, deadline = (int(os.environ[k]) for k in ("SAMPLES", "INTERVAL", "DEADLINE"))

state = json.load(open(os.path.join(cluster, "state.json")))
comps = {c["name"]: c for c in state["components"]}
agent = next(c for n, c in comps.items() if n.endswith("/agent"))
server = comps["apiserver"]

kc = json.load(open(os.path.join(cluster, "kubeconfig")))  # ferry up writes it as JSON
server_url = kc["clusters"][0]["cluster"]["server"]
token = kc["users"][0]["user"]["token"]
ca = tempfile.NamedTemporaryFile(suffix=".crt", delete=False)
ca.write(base64.b64decode(kc["clusters"][0]["cluster"]["certificate-authority-data"]))
ca.close()
host, port = server_url.removeprefix("https://").rsplit(":", 1)
ctx = ssl.create_default_context(cafile=ca.name)
ctx.check_hostname = False

def status(pid):
    out = {}
    for line in open(f"/proc/{pid}/status"):
        k, v = line.split(":", 1)
        if k in ("VmRSS", "VmHWM"):
            out[k] = int(v.split()[0]) / 1024
    return out

def metric(name):
    try:
        body = subprocess.run(["nsenter", "-t", str(agent["proc"]["pid"]), "-n", "curl", "-s",
                               "http://127.0.0.1:9465/metrics"], capture_output=True, text=True,
                              timeout=10).stdout
    except subprocess.TimeoutExpired:
        return None
    for line in body.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None

def summary(values):
    return f"{statistics.median(values):.1f} [{min(values):.1f}-{max(values):.1f}] MiB"

idle = status(agent["proc"]["pid"])
print(f"idle agent: VmRSS {idle['VmRSS']:.1f} MiB, VmHWM {idle['VmHWM']:.1f} MiB", flush=True)

def ip(i):
    i += 200 << 16
    return f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}"

done = [0]
lock = threading.Lock()
start = time.monotonic()
errors = []

def post(conn, path, body):
    data = json.dumps(body)
    for attempt in range(5):
        try:
            conn.request("POST", path, data, {"Authorization": f"Bearer {token}",
                                              "Content-Type": "application/json"})
            r = conn.getresponse()
            payload = r.read()
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            time.sleep(0.5)
            continue
        if r.status in (200, 201, 409):
            return
        if r.status in (429, 500, 503):
            time.sleep(0.5)
            continue
        raise RuntimeError(f"POST {path}: {r.status} {payload[:300]!r}")
    raise RuntimeError(f"POST {path}: gave up after retries")

def client(k):
    conn = http.client.HTTPSConnection(host, int(port), context=ctx, timeout=60)
    try:
        for i in range(k, services, clients):
            if time.monotonic() - start > deadline:
                return
            name = f"mem-{i}"
            post(conn, "/api/v1/namespaces/default/services", {
                "apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
                "spec": {"ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP"}]}})
            post(conn, "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices", {
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": f"{name}-1", "labels": {"kubernetes.io/service-name": name}},
                "addressType": "IPv4", "ports": [{"port": 8080, "protocol": "TCP"}],
                "endpoints": [{"addresses": [ip(i * per + j)], "conditions": {"ready": True}}
                              for j in range(per)]})
            with lock:
                done[0] += 1
    except Exception as e:
        errors.append(repr(e))

threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(clients)]
for t in threads:
    t.start()
last = (start, 0)
next_report = 1000
while any(t.is_alive() for t in threads):
    time.sleep(0.5)
    with lock:
        n = done[0]
    if n >= next_report:
        now = time.monotonic()
        rate = (n - last[1]) / max(now - last[0], 1e-6)
        rss = status(agent["proc"]["pid"])["VmRSS"]
        srv = status(server["proc"]["pid"])["VmRSS"]
        print(f"{n:6d} Services  {now - start:6.0f} s  {rate:6.0f} Services+slices/s  "
              f"agent {rss:6.1f} MiB  ferry-server {srv:6.1f} MiB", flush=True)
        last = (now, n)
        next_report = (n // 1000 + 1) * 1000
if errors:
    sys.exit(f"load failed: {errors[0]}")
created = done[0]
took = time.monotonic() - start
print(f"created {created} Services / {created * per} endpoints in {took:.0f} s "
      f"({created / took:.0f}/s)", flush=True)

# The agent has it all when its frontends count every Service (plus `kubernetes`).
want = created + 1
t0 = time.monotonic()
while True:
    f = metric("ferry_service_frontends")
    if f is not None and f >= want:
        break
    if time.monotonic() - t0 > 300:
        sys.exit(f"the agent did not reach {want} frontends in 300 s (at {f})")
    time.sleep(1)
print(f"agent programmed {int(f)} frontends {time.monotonic() - t0:.1f} s after the load ended",
      flush=True)

rows = {"agent VmRSS": [], "agent VmHWM": [], "ferry-server VmRSS": [], "ferry-server VmHWM": []}
loads = []
for s in range(samples):
    if s:
        time.sleep(interval)
    loads.append(float(open("/proc/loadavg").read().split()[0]))
    a, b = status(agent["proc"]["pid"]), status(server["proc"]["pid"])
    rows["agent VmRSS"].append(a["VmRSS"]); rows["agent VmHWM"].append(a["VmHWM"])
    rows["ferry-server VmRSS"].append(b["VmRSS"]); rows["ferry-server VmHWM"].append(b["VmHWM"])
print(f"{samples} samples every {interval} s at {created} Services / {created * per} endpoints "
      f"(1-min load average {min(loads):.1f}-{max(loads):.1f}):")
for k, v in rows.items():
    print(f"  {k:20s} {summary(v)}")
for m in ("ferry_service_frontends", "ferry_service_backends", "ferry_service_skipped"):
    print(f"  {m} {metric(m)}")
EOF
