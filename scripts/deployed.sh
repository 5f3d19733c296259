#!/usr/bin/env bash
# The tests that touch the installed product, again, on a machine where the README's
# installation was done: the Debian package built and installed (its postinst creates
# the `fdbroker` user and group with systemd-sysusers, at whatever id this machine
# gives it), the units in place, the socket enabled. The suite must pass there as on a
# fresh machine (issue 23: the systemd test assumed uid 993, the signal tests a fast
# machine).
#
# Everything happens in a private mount namespace with /etc, /usr and /var/lib/dpkg
# overlaid on a tmpfs: the machine itself is left exactly as it was, so a later run on
# it is a fresh machine again. scripts/test.sh runs this after the whole suite. As root.
#
#   scripts/deployed.sh [TEST...]     (default: the tests below)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  echo "deployed: run as root" >&2
  exit 1
fi
if [ -z "${FDBROKER_DEPLOYED_NS:-}" ]; then
  exec unshare --mount --propagation private env FDBROKER_DEPLOYED_NS=1 bash "$0" "$@"
fi

work="$(mktemp -d /var/tmp/fdbroker-deployed.XXXXXX)"
trap 'umount -R "$work" 2>/dev/null || true; rm -rf "$work"' EXIT
mount -t tmpfs tmpfs "$work"
for dir in /etc /usr /var/lib/dpkg; do
  layer="$work/$(echo "$dir" | tr / _)"
  mkdir -p "$layer/upper" "$layer/work"
  mount -t overlay overlay -o "lowerdir=$dir,upperdir=$layer/upper,workdir=$layer/work" "$dir"
done

# The README's installation (docs/install.md), with the debug build the suite made
# (the release build would only take longer; the installed state is the same).
cargo build --locked -p fdbroker -p fdbroker-ffi
mapfile -t debs < <(bash packaging/deb/build.sh --profile debug --no-build --out "$work/debs")
dpkg -i "${debs[@]}"
fdbroker policy check /etc/fdbroker/policy.toml
systemctl --root=/ enable fdbroker.socket
echo "deployed: $(fdbroker --version); $(id fdbroker)"

tests=("$@")
if [ ${#tests[@]} -eq 0 ]; then
  tests=(systemd package doctor sandbox_groups spawn signals cli)
fi
args=()
for t in "${tests[@]}"; do args+=(--test "$t"); done
cargo test --locked -p fdbroker-tests "${args[@]}"
