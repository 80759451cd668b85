#!/usr/bin/env bash
# Ferry's main job: install everything, bring up a 3-node cluster on this machine with `ferry up`
# (every node, pod and the control plane in its own network namespace), deploy a sample app,
# show its pods spread across the nodes with their IPs, reach it through its Service's ClusterIP
# (eBPF socket load balancing: 30 requests from node-1, and the spread over the backends), reach
# the API through the `kubernetes` Service, show a pod's egress to an external host (masqueraded to
# its node's address), then run `ferry bench --quick` on the same cluster (every path against its
# physical limit: loopback, raw veth, pod to pod on a node and across nodes over VXLAN, ClusterIP
# with a local and a remote backend; stream, request/response and connection tests, 3 rounds) and
# print its table; the report (JSON, CSV, HTML, Prometheus) stays in ./ferry-bench-demo/.
# `ferry down` removes the cluster, also when anything fails.
# Runs as root; re-runs itself with sudo when started as another user.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/root.sh
. scripts/root.sh
as_root "$0" "$@"

bash scripts/setup.sh
cargo build --release --locked --bins

FERRY=$PWD/target/release/ferry
NAME=demo$$
NAME=${NAME:0:10}
STATE=$(mktemp -d /tmp/ferry-demo.XXXXXX)
cleanup() {
  "$FERRY" down --name "$NAME" --state-dir "$STATE" || true
  rm -rf "$STATE"
}
trap cleanup EXIT

echo "== ferry up"
"$FERRY" up --name "$NAME" --state-dir "$STATE" --nodes 3 --api-port 0 --backend vxlan \
  --service-proxy ebpf
export KUBECONFIG=$STATE/$NAME/kubeconfig

echo "== kubectl get nodes -o wide"
kubectl get nodes -o wide
echo "== deploy the sample app (examples/web.yaml)"
kubectl apply -f examples/web.yaml
kubectl rollout status deployment/web --timeout=120s
kubectl get pods -o wide
kubectl get endpointslices

# Two pods on different nodes (the first one's network namespace is its kubelet's bind mount).
pods=$(kubectl get pods -l app=web -o json)
a=$(jq -r '.items[] | select(.spec.nodeName=="node-1") | .metadata.uid + " " + .status.podIP' <<<"$pods" | head -1)
b=$(jq -r '.items[] | select(.spec.nodeName=="node-2") | .metadata.uid + " " + .status.podIP' <<<"$pods" | head -1)
NS_A=$STATE/$NAME/nodes/n1/kubelet/netns/${a%% *}
IP_B=${b##* }
echo "== pod on node-1 (${a##* }) -> pod on node-2 ($IP_B), VXLAN overlay"
nsenter --net="$NS_A" ping -c 3 -i 0.2 "$IP_B" | tail -2
nsenter --net="$NS_A" curl -s -o /dev/null -w "HTTP %{http_code} from $IP_B:8080\n" "http://$IP_B:8080/"

# A client as a pod is one: in the pod's network namespace and below node-1's cgroup, where the
# agent's socket hooks are attached (cgroup v2 hooks apply to every descendant).
CLIENT_CG=$(jq -r .cgroup_root "$STATE/$NAME/state.json")/ferry-$NAME/n1/demo-client
mkdir -p "$CLIENT_CG"
in_pod_a() {
  (echo "$BASHPID" >"$CLIENT_CG/cgroup.procs" && exec nsenter --net="$NS_A" "$@")
}
SVC_IP=$(kubectl get svc web -o jsonpath='{.spec.clusterIP}')
kubectl get svc web kubernetes
echo "== Service web: 30 requests to its ClusterIP $SVC_IP:80 from node-1 (pod namespace, node-1's cgroup)"
echo "   each backend answers with its pod name and IP; count per backend:"
# shellcheck disable=SC2016 # expanded by the inner bash
in_pod_a bash -c 'for i in $(seq 30); do curl -s --max-time 2 "http://$0/" || echo "request $i FAILED"; done' "$SVC_IP" |
  sort | uniq -c | sed 's/^/   /'
echo "== the kubernetes Service from the same pod: https://10.96.0.1/version (ClusterIP -> the apiserver)"
in_pod_a curl -sk --max-time 3 https://10.96.0.1/version | jq -c '{gitVersion, platform}'
echo "== egress: pod on node-1 -> external host 10.99.0.254 ($NAME-ext), masqueraded to node-1's IP"
nsenter --net="/run/netns/$NAME-ext" python3 -c 'import socket
s = socket.create_server(("10.99.0.254", 9000)); s.settimeout(10)
c, peer = s.accept(); print("external host sees the connection from", peer[0], "(node-1 is 10.99.0.11)")' &
sleep 0.3
nsenter --net="$NS_A" bash -c 'exec 3<>/dev/tcp/10.99.0.254/9000'
wait $!
echo "== kubectl logs (through the apiserver -> kubelet)"
kubectl logs "$(jq -r '.items[0].metadata.name' <<<"$pods")" | tail -3
echo "== ferry status"
"$FERRY" status --name "$NAME" --state-dir "$STATE"
echo "== ferry bench --quick (on this cluster; the report stays in ./ferry-bench-demo/)"
rm -rf ferry-bench-demo
"$FERRY" bench --quick --name "$NAME" --state-dir "$STATE" --out ferry-bench-demo
echo "== ferry down"
"$FERRY" down --name "$NAME" --state-dir "$STATE"
if [ -e "/sys/fs/bpf/ferry-$NAME" ]; then
  echo "eBPF pins left under /sys/fs/bpf/ferry-$NAME" >&2
  exit 1
fi
