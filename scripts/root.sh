# Sourced by Ferry's scripts: `as_root "$0" "$@"` at the top of a script makes the rest of it run as
# root. Root (a fresh machine of the project's kind): carries on. Not root with sudo (a laptop):
# re-runs the script under sudo, keeping PATH so the user's rustup toolchain is found. Neither: a
# clear message and exit 1.
as_root() {
  local script=$1
  shift
  [ "$(id -u)" -eq 0 ] && return 0
  if command -v sudo >/dev/null 2>&1; then
    echo "$(basename "$script"): not root, re-running with sudo" >&2
    exec sudo --preserve-env=PATH,CARGO_HOME,RUSTUP_HOME,CI env "PATH=$PATH" bash "$script" "$@"
  fi
  echo "$(basename "$script"): needs root (it installs packages and creates network namespaces), and sudo is not installed; run it as root" >&2
  exit 1
}
