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

cargo build --release --bin fdbroker
bin=target/release/fdbroker
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
