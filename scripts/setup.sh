#!/usr/bin/env bash
# Installs everything Ferry needs on a fresh Debian bookworm machine of the project's kind.
# Idempotent: a second run checks what is there and returns in a second or two.
#
#   - apt packages for the build (llvm-22 for bpf-linker; protoc and the well-known .proto files of
#     libprotobuf-dev for etcd-client's build script: --no-install-recommends leaves those out), the tests (iproute2, iptables, bpftool,
#     containerd, the reference CNI plugins; tar in pods for `kubectl cp`, script(1) to give kubectl
#     a terminal in the `exec -it` test, curl) and the benchmarks (iperf3, sockperf; chromium and
#     python3-jsonschema for `ferry bench`'s report tests: headless Chromium opens the HTML report
#     and needs none of its recommends with --no-sandbox, jsonschema validates the JSON report);
#   - the nightly `rust-src` component (eBPF programs are built with -Z build-std=core);
#   - bpf-linker, built against the system LLVM 22.
set -euo pipefail

# shellcheck source=scripts/root.sh
. "$(dirname "$0")/root.sh"
as_root "$0" "$@"

APT_PACKAGES=(
  build-essential pkg-config ca-certificates
  iproute2 iptables nftables bpftool jq util-linux procps
  tar bsdutils curl
  iperf3 sockperf iputils-ping strace ethtool conntrack
  chromium python3-jsonschema
  containernetworking-plugins containerd
  etcd-server
  llvm-22-dev libpolly-22-dev zlib1g-dev libzstd-dev
  protobuf-compiler libprotobuf-dev
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing apt packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian starts containerd and etcd as services on install; Ferry's tests start their own.
  for svc in containerd etcd; do
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then
      systemctl stop "$svc" || true
      systemctl disable "$svc" >/dev/null 2>&1 || true
    fi
  done
else
  echo "setup: apt packages present"
fi


if ! rustup component list --toolchain nightly --installed 2>/dev/null | grep -q '^rust-src'; then
  echo "setup: adding rust-src to the nightly toolchain"
  rustup component add rust-src --toolchain nightly
else
  echo "setup: nightly rust-src present"
fi

if ! command -v bpf-linker >/dev/null 2>&1; then
  echo "setup: building bpf-linker against LLVM 22 (about 75 s)"
  LLVM_PREFIX=/usr/lib/llvm-22 cargo install --locked bpf-linker --no-default-features --features llvm-22
else
  echo "setup: bpf-linker present ($(bpf-linker --version 2>/dev/null | head -1))"
fi

# What the build, the tests and the benchmarks need, checked after installing: a missing piece is
# named here rather than failing a build ten minutes later.
problems=()
for cmd in cc pkg-config protoc ip iptables-save iptables-restore bpftool jq nsenter iperf3 sockperf chromium \
  ping ethtool containerd etcd kubectl bpf-linker cargo rustup tar script curl; do
  command -v "$cmd" >/dev/null 2>&1 || problems+=("command '$cmd' not found")
done
for f in /usr/include/google/protobuf/descriptor.proto /usr/include/google/protobuf/struct.proto \
  /usr/lib/cni/bridge /usr/lib/cni/host-local /usr/lib/llvm-22/bin/llvm-config; do
  [ -e "$f" ] || problems+=("file $f missing")
done
/usr/bin/python3 -c 'import jsonschema' 2>/dev/null ||
  problems+=("python module jsonschema missing for /usr/bin/python3 (python3-jsonschema)")
if command -v chromium >/dev/null 2>&1; then
  dom=$(timeout 60 chromium --headless --no-sandbox --disable-gpu --dump-dom 'data:text/html,<p>ok</p>' 2>/dev/null || true)
  [[ $dom == *'<p>ok</p>'* ]] || problems+=("chromium --headless cannot render a page (try: chromium --headless --no-sandbox --dump-dom about:blank)")
fi
rustup component list --toolchain nightly --installed 2>/dev/null | grep -q '^rust-src' ||
  problems+=("nightly rust-src component missing")
if [ "${#problems[@]}" -gt 0 ]; then
  echo "setup: FAILED, the machine still lacks:" >&2
  printf '  - %s\n' "${problems[@]}" >&2
  exit 1
fi
echo "setup: done"
