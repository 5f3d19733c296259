#!/usr/bin/env bash
# Run every cargo-fuzz target for a while, on stable Rust (no sanitizer: libFuzzer's
# coverage instrumentation works without nightly, AddressSanitizer does not).
#
#   scripts/fuzz.sh            # 60 s per target
#   scripts/fuzz.sh 600        # 10 min per target
#   scripts/fuzz.sh 30 decode_broker
#
# Each run starts from the committed seeds in fuzz/corpus/<target>/ (read only) and
# keeps what it discovers in a temporary directory. A crash leaves its input in
# fuzz/artifacts/<target>/ and makes this script exit non-zero; reproduce it with
#   cargo fuzz run --sanitizer none <target> fuzz/artifacts/<target>/<file>
# See fuzz/README.md.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

secs="${1:-60}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(decode_broker decode_worker policy_parse)
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz from crates.io" >&2
  cargo install cargo-fuzz --locked
fi

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
cargo fuzz build --sanitizer none

status=0
for t in "${targets[@]}"; do
  work="$(mktemp -d)"
  echo "fuzz: $t for ${secs}s" >&2
  if ! cargo fuzz run --sanitizer none "$t" "$work" "corpus/$t" -- \
      -max_total_time="$secs" -timeout=10 -rss_limit_mb=1024 -print_final_stats=1 \
      2> "$work.log"; then
    echo "fuzz: $t FAILED; last lines of its log:" >&2
    tail -40 "$work.log" >&2
    status=1
  else
    grep -E '^(Done|stat::number_of_executed_units|stat::peak_rss_mb)' "$work.log" >&2 || true
  fi
  rm -rf "$work" "$work.log"
done
exit "$status"
