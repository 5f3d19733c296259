#!/usr/bin/env bash
# Install what the test suite needs on a bare Debian machine, then run every check:
# formatting, clippy, `cargo test --workspace` (end-to-end tests need root; they also
# build and run the C example and the Python package's pytest suite), the tests that
# meet the installed product again after the README's installation
# (scripts/deployed.sh), and the benchmark in its quick mode.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v setpriv >/dev/null || need+=(util-linux)
command -v systemd-socket-activate >/dev/null || need+=(systemd)
command -v systemd-analyze >/dev/null || need+=(systemd)
# The C library's tests compile its example with cc and pkg-config (tests/tests/ffi.rs);
# the Python package's tests run Debian's python3 (one that `nobody` can run) in a
# venv with Debian's pytest and wheel, and the ClamAV example a real clamd
# (tests/tests/python.rs).
command -v cc >/dev/null || need+=(gcc)
command -v pkg-config >/dev/null || need+=(pkg-config)
command -v readelf >/dev/null || need+=(binutils)
# tests/tests/logfail.rs freezes a loop-mounted ext4 (mkfs.ext4; fsfreeze is util-linux).
command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)
for pkg in python3 python3-venv python3-pytest python3-wheel clamav-daemon; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
# The Debian packages are built with dpkg-dev and checked with lintian
# (tests/tests/package.rs); the shell completions are parsed by zsh and fish
# (tests/tests/doctor.rs).
for pkg in dpkg-dev lintian zsh fish; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
# Real programs for `fdbroker run --transparent` (tests/tests/transparent.rs).
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
# The C library's shared and static builds (cdylib, staticlib) exist only once its
# own crate is built: tests/tests/ffi.rs links the C example against them.
cargo build -p fdbroker-ffi --locked
cargo test --workspace --locked --no-fail-fast
# Again where the product is deployed: the README's installation done (in a private mount
# namespace, so this machine stays a fresh one), then the tests that meet it.
bash scripts/deployed.sh
# The benchmark's smoke run: it must still build and run end to end. It reports its
# ratios against the floor and never fails on them (timings on a CI machine are noise);
# the full run and the README's table are `cargo bench -p fdbroker-tests --bench broker`.
cargo bench -p fdbroker-tests --bench broker --locked -- --quick
