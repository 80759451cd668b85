#!/usr/bin/env bash
# Installs everything (scripts/setup.sh) and runs Ferry's whole test suite: formatting, clippy,
# unit tests, and the privileged tests on the real kernel (as root, each in fresh network
# namespaces), then a short run of the CNI benchmark to prove it works (figures are printed, not
# asserted: performance targets live in `cargo bench`, not in tests).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

# Best-effort sweep of namespaces a killed test run could have left (tests clean up on drop and
# on panic; this covers SIGKILL). Only our own prefixes are touched.
sweep() {
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^(fcn|fcp|fce|fbn|fbp|ftt|fdm)[0-9a-z]+$' || true); do
    ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
  done
}
trap sweep EXIT

export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --locked --workspace --all-targets -- -D warnings
echo "== cargo test (unit + privileged)"
cargo test --locked --workspace
echo "== CNI benchmark smoke run (short; the README's demo runs the full one)"
cargo bench --locked -p ferry-cni --bench cni -- --pods 10 --concurrent 30 --rounds 1
