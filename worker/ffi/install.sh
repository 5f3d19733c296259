#!/usr/bin/env bash
# Build and install libfdbroker_client, the C library of fdbroker: the header
# fdbroker.h, the shared library (soname libfdbroker_client.so.0), the static library,
# and the pkg-config file fdbroker-client.pc.
#
#   worker/ffi/install.sh [--prefix DIR] [--libdir DIR] [--includedir DIR]
#                         [--destdir DIR] [--profile release|debug]
#                         [--target-dir DIR] [--no-build]
#
# Defaults: --prefix /usr/local, --libdir PREFIX/lib, --includedir PREFIX/include,
# --profile release, --target-dir the workspace's target/. --no-build installs what is
# already built there (CI's tests use it on the debug build). --destdir stages the files
# under DIR for packaging; the paths inside the .pc file stay those of --prefix.
# Then: cc prog.c $(pkg-config --cflags --libs fdbroker-client)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"

prefix=/usr/local libdir= includedir= destdir= profile=release target_dir= build=1
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix="$2"; shift 2 ;;
    --libdir) libdir="$2"; shift 2 ;;
    --includedir) includedir="$2"; shift 2 ;;
    --destdir) destdir="$2"; shift 2 ;;
    --profile) profile="$2"; shift 2 ;;
    --target-dir) target_dir="$2"; shift 2 ;;
    --no-build) build=0; shift ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$profile" in
  release|debug) ;;
  *) echo "install.sh: --profile is release or debug" >&2; exit 2 ;;
esac
libdir="${libdir:-$prefix/lib}"
includedir="${includedir:-$prefix/include}"
target_dir="${target_dir:-${CARGO_TARGET_DIR:-$root/target}}"

if [ "$build" = 1 ]; then
  flag=(); [ "$profile" = release ] && flag=(--release)
  cargo build --manifest-path "$root/Cargo.toml" -p fdbroker-ffi --locked "${flag[@]}" \
    --target-dir "$target_dir"
fi
out="$target_dir/$profile"
for f in libfdbroker_client.so libfdbroker_client.a; do
  [ -f "$out/$f" ] || { echo "install.sh: $out/$f is missing; build it first" >&2; exit 1; }
done

version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -n1)"
url="$(sed -n 's/^repository = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -n1)"
major=0
real="libfdbroker_client.so.$version"

install -d "$destdir$includedir" "$destdir$libdir/pkgconfig"
install -m 0644 "$here/include/fdbroker.h" "$destdir$includedir/fdbroker.h"
install -m 0755 "$out/libfdbroker_client.so" "$destdir$libdir/$real"
ln -sfn "$real" "$destdir$libdir/libfdbroker_client.so.$major"
ln -sfn "libfdbroker_client.so.$major" "$destdir$libdir/libfdbroker_client.so"
install -m 0644 "$out/libfdbroker_client.a" "$destdir$libdir/libfdbroker_client.a"
sed -e "s|@PREFIX@|$prefix|" -e "s|@LIBDIR@|$libdir|" -e "s|@INCLUDEDIR@|$includedir|" \
    -e "s|@VERSION@|$version|" -e "s|@URL@|$url|" \
    "$here/fdbroker-client.pc.in" > "$destdir$libdir/pkgconfig/fdbroker-client.pc"
chmod 0644 "$destdir$libdir/pkgconfig/fdbroker-client.pc"

echo "installed libfdbroker_client $version under $destdir$prefix"
if [ -z "$destdir" ] && [ "$(id -u)" -eq 0 ] && command -v ldconfig >/dev/null; then
  ldconfig 2>/dev/null || true
fi
