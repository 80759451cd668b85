#!/usr/bin/env bash
# Ferry's main job until the cluster lands: install everything, attach two pods to a node with
# ferry-cni, show their addresses and routes, measure pod-to-pod throughput with iperf3, then run
# the CNI benchmark (ferry-cni vs the reference bridge + host-local plugins, side by side).
# Everything runs inside network namespaces created here and removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
cargo build --release --locked -p ferry-cni

BIN=$PWD/target/release/ferry-cni
TAG=fdm$$
NODE=${TAG}n
WORK=$(mktemp -d /tmp/ferry-demo.XXXXXX)
cleanup() {
  for ns in ${TAG}a ${TAG}b "$NODE"; do
    ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

ip netns add "$NODE"
ip netns add "${TAG}a"
ip netns add "${TAG}b"
CONF='{"cniVersion":"1.0.0","name":"demo","type":"ferry-cni","bridge":"cni0","mtu":1500,
  "ipam":{"subnet":"10.244.1.0/24","dataDir":"'"$WORK"'/ipam"}}'

cni() { # cni VERB CONTAINER NETNS
  echo "$CONF" | ip netns exec "$NODE" env CNI_COMMAND="$1" CNI_CONTAINERID="$2" \
    CNI_NETNS="$3" CNI_IFNAME=eth0 CNI_PATH=/usr/lib/cni "$BIN"
}

echo "== ferry-cni ADD for two pods on node $NODE"
for p in a b; do
  cni ADD "pod-$p" "/run/netns/${TAG}$p" | jq -c '{pod: "'"$p"'", ips: [.ips[].address], routes: [.routes[].dst]}'
done
for p in a b; do
  echo "-- pod $p:"; ip netns exec "${TAG}$p" ip -br addr show dev eth0; ip netns exec "${TAG}$p" ip route
done
IP_B=$(ip netns exec "${TAG}b" ip -j addr show dev eth0 | jq -r '.[0].addr_info[] | select(.family=="inet") | .local')
echo "== pod a -> pod b ($IP_B)"
ip netns exec "${TAG}a" ping -c 3 -i 0.2 "$IP_B" | tail -2
ip netns exec "${TAG}b" iperf3 -s -1 -D >/dev/null
sleep 0.3
ip netns exec "${TAG}a" iperf3 -c "$IP_B" -t 3 -O 1 | grep -E 'sender|receiver'
echo "== ferry-cni DEL"
cni DEL pod-a "/run/netns/${TAG}a"
cni DEL pod-b ""
echo "   host links left on the node: $(ip netns exec "$NODE" ip -br link | awk '{print $1}' | tr '\n' ' ')"

echo "== CNI benchmark: ferry-cni vs bridge+host-local (same run, same kernel)"
cargo bench --locked -p ferry-cni --bench cni -- "$@"
