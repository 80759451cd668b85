#!/usr/bin/env bash
# Installs everything (scripts/setup.sh) and runs Ferry's whole test suite: formatting, clippy,
# unit tests, and the privileged tests on the real kernel (as root, each in fresh network
# namespaces), among them smoke runs of `ferry bench` (figures are checked for presence, not for
# targets: performance targets live in the benchmarks). Runs as root; re-runs itself with sudo
# when started as another user.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/root.sh
. scripts/root.sh
as_root "$0" "$@"

bash scripts/setup.sh

# Best-effort sweep of namespaces a killed test run could have left (tests clean up on drop and
# on panic; this covers SIGKILL). Only our own prefixes are touched.
sweep() {
  # `ferry up` test clusters (fu*, fb*): ferry down knows everything they created.
  for state in /tmp/ferry-up-test*/ /tmp/.tmp*/; do
    for cluster in "$state"f[ub]*/; do
      [ -f "${cluster}state.json" ] || continue
      target/debug/ferry down --name "$(basename "$cluster")" --state-dir "$state" >/dev/null 2>&1 || true
    done
  done
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' |
    grep -E '^((fcn|fcp|fce|fbn|fbp|ftt|fdm|fsw|fnd|fpa|fpb|fpk|fex)[0-9a-z]+|(kl|kp|ka)[0-9a-z]+[cn]|f[ub][0-9a-z]+-(sw|cp|ext|n[0-9]+))$' || true); do
    ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
  done
  # Kubelet test cgroups (fkl*) and ferry up clusters' cgroups: kill what is left, remove them.
  for cg in /sys/fs/cgroup/unified/fkl* /sys/fs/cgroup/unified/ferry-f[ub]*; do
    [ -d "$cg" ] || continue
    echo 1 > "$cg/cgroup.kill" 2>/dev/null || true
    sleep 0.2
    find "$cg" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
}
trap sweep EXIT

export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --locked --workspace --all-targets -- -D warnings
echo "== cargo test (unit + privileged)"
log=$(mktemp)
set +e
cargo test --locked --workspace --no-fail-fast 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
totals=$(awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
  END { printf "%d passed, %d failed", p, f }' "$log")
rm -f "$log"
echo "tests: $totals"
exit "$status"
