#!/usr/bin/env bash
# Build fdbroker and show it working on the shipped demo policy
# (policy/examples/demo.toml): an unprivileged process (nobody) cannot open a
# root-only file itself, and reads it through the broker. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "demo: run as root (the broker needs to open root-only files)" >&2
  exit 1
fi

# Where cargo builds: CARGO_TARGET_DIR when set (relative to the repository, as cargo
# reads it from here), else target/.
target_dir="${CARGO_TARGET_DIR:-target}"
cargo build --release --bin fdbroker
bin="$target_dir/release/fdbroker"
policy=policy/examples/demo.toml
tree=/var/tmp/fdbroker-demo
sock=/run/fdbroker-demo/fdbroker.sock

rm -rf "$tree"
mkdir -p "$tree/quarantine/keys" "$tree/etc"
chmod 755 "$tree" "$tree/quarantine" "$tree/etc"
printf 'EICAR-like sample: only root may read this file\n' > "$tree/quarantine/sample.txt"
printf 'secret key material\n' > "$tree/quarantine/keys/private.pem"
printf 'threshold = 3\n' > "$tree/etc/scanner.conf"
chmod 600 "$tree/quarantine/sample.txt" "$tree/quarantine/keys/private.pem" "$tree/etc/scanner.conf"

"$bin" policy check "$policy"

"$bin" serve --policy "$policy" 2> "$tree/broker.log" &
broker=$!
trap 'kill -TERM $broker 2>/dev/null; wait $broker 2>/dev/null || true' EXIT
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.05; done

as_nobody() { setpriv --reuid=nobody --regid=nogroup --clear-groups "$@"; }

echo
echo "== as nobody, directly:  cat $tree/quarantine/sample.txt"
as_nobody cat "$tree/quarantine/sample.txt" || echo "   (refused by the kernel, as it should be)"
echo
echo "== as nobody, through the broker:  fdbroker cat $tree/quarantine/sample.txt"
as_nobody "$bin" cat --socket "$sock" "$tree/quarantine/sample.txt"
echo
echo "== as nobody, through the broker, a file the policy denies:"
as_nobody "$bin" cat --socket "$sock" "$tree/quarantine/keys/private.pem" || echo "   (denied by the policy)"
echo
echo "== why? fdbroker policy explain:"
"$bin" policy explain "$policy" --uid nobody "$tree/quarantine/keys/private.pem" || true
echo
echo "== the broker's audit log:"
grep audit "$tree/broker.log" || true

# ---------------------------------------------------------------------------------
# Spawn mode: the scanner example runs confined under `fdbroker run`, fetching its
# signatures and every file to scan through the broker (policy/examples/scanner.toml).
cargo build --release --example scanner -p fdbroker-worker
scan=/var/tmp/fdbroker-scan
rm -rf "$scan"
mkdir -p "$scan/bin" "$scan/quarantine"
chmod 755 "$scan" "$scan/bin" "$scan/quarantine"
install -m 0755 "$target_dir/release/examples/scanner" "$scan/bin/scanner"
install -m 0600 worker/examples/scanner/signatures.txt "$scan/signatures.txt"
printf 'hello, nothing to see\n' > "$scan/quarantine/clean.txt"
printf 'X5O!P%%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*\n' > "$scan/quarantine/eicar.com"
printf 'known bad sample payload' > "$scan/quarantine/known-bad.bin"
chmod 600 "$scan"/quarantine/*
echo
echo "== fdbroker run: the scanner, confined as a transient uid of its own, scans root-only files:"
ls "$scan"/quarantine/* | "$bin" run --policy policy/examples/scanner.toml -- \
  "$scan/bin/scanner" --signatures "$scan/signatures.txt" 2>/dev/null || true
