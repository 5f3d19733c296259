#!/usr/bin/env bash
# Install what the test suite needs on a bare Debian machine, then run every check:
# formatting, clippy, `cargo test --workspace` (end-to-end tests need root), and the
# benchmark in its quick mode.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v setpriv >/dev/null || need+=(util-linux)
command -v systemd-socket-activate >/dev/null || need+=(systemd)
command -v systemd-analyze >/dev/null || need+=(systemd)
# Real programs for `fdbroker run --transparent` (tests/tests/transparent.rs).
[ -x /usr/bin/python3 ] || need+=(python3)
[ -x /usr/bin/clamscan ] || need+=(clamav)
[ -x /usr/bin/yara ] || need+=(yara)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need[@]}"
  else
    echo "test: missing ${need[*]}; run as root to install them" >&2
    exit 1
  fi
fi

cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
# The benchmark's smoke run: it must still build and run end to end. It reports its
# ratios against the floor and never fails on them (timings on a CI machine are noise);
# the full run and the README's table are `cargo bench -p fdbroker-tests --bench broker`.
cargo bench -p fdbroker-tests --bench broker --locked -- --quick
