#!/usr/bin/env bash
# Build fdbroker's Debian packages with one command:
#
#   packaging/deb/build.sh [--out DIR] [--profile release|debug] [--target-dir DIR]
#                          [--no-build] [--bin PATH]
#
#   fdbroker_VERSION_ARCH.deb               /usr/bin/fdbroker, the systemd units, the
#                                           sysusers.d entry, /etc/fdbroker/policy.toml
#                                           (a conffile that denies everything), man
#                                           pages, bash/zsh/fish completions, licenses
#   libfdbroker-client0_VERSION_ARCH.deb    the C library (soname libfdbroker_client.so.0)
#   libfdbroker-client-dev_VERSION_ARCH.deb header, .so link, static library, pkg-config
#
# Defaults: --out the target directory's debian/, --profile release, --target-dir
# $CARGO_TARGET_DIR or the workspace's target/. --no-build packages what is already
# built there (the tests use it on the debug build); --bin packages that fdbroker
# binary instead of the target directory's (the tests' own build of it). Needs
# dpkg-dev (dpkg-shlibdeps, dpkg-architecture) and pkg-config (systemd's .pc names the
# unit directory; /lib/systemd/system without it); no debhelper, no network.
#
# Why plain dpkg-deb rather than cargo-deb or a debian/ directory: the packages hold
# files built by cargo and by this repository's own scripts (worker/ffi/install.sh,
# `fdbroker completions`), so staging them is a few lines here; dpkg-deb ships with every
# Debian system, where cargo-deb would be one more tool to install (and build), and a
# debian/ directory with debhelper would need Debian's packaged crates or a vendored
# tree to build offline. The maintainer scripts are the few lines debhelper would
# generate, written out.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"

out= profile=release target_dir= build=1 bin=
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --profile) profile="$2"; shift 2 ;;
    --target-dir) target_dir="$2"; shift 2 ;;
    --no-build) build=0; shift ;;
    --bin) bin="$2"; shift 2 ;;
    -h|--help) sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$profile" in
  release|debug) ;;
  *) echo "build.sh: --profile is release or debug" >&2; exit 2 ;;
esac
for tool in dpkg-deb dpkg-shlibdeps dpkg-architecture pkg-config strip; do
  command -v "$tool" >/dev/null || {
    echo "build.sh: $tool is missing: apt-get install dpkg-dev pkg-config binutils" >&2
    exit 1
  }
done
target_dir="${target_dir:-${CARGO_TARGET_DIR:-$root/target}}"
target_dir="$(mkdir -p "$target_dir" && cd "$target_dir" && pwd)"
out="${out:-$target_dir/debian}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"

if [ "$build" = 1 ]; then
  flag=(); [ "$profile" = release ] && flag=(--release)
  cargo build --manifest-path "$root/Cargo.toml" --locked "${flag[@]}" \
    --target-dir "$target_dir" -p fdbroker -p fdbroker-ffi
fi
bin="${bin:-$target_dir/$profile/fdbroker}"
[ -x "$bin" ] || { echo "build.sh: $bin is missing; build it first" >&2; exit 1; }

version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -n1)"
arch="$(dpkg-architecture -qDEB_HOST_ARCH)"
multiarch="$(dpkg-architecture -qDEB_HOST_MULTIARCH)"
unitdir="$(pkg-config --variable=systemdsystemunitdir systemd 2>/dev/null || true)"
unitdir="${unitdir:-/lib/systemd/system}"
sysusersdir="$(pkg-config --variable=sysusersdir systemd 2>/dev/null || true)"
sysusersdir="${sysusersdir:-/usr/lib/sysusers.d}"
maintainer="fdbroker maintainers <fdbroker@example.invalid>"
commit="$("$bin" version | sed -n 's/.*(commit \(.*\))$/\1/p')"

stage="$(mktemp -d "$target_dir/deb-stage.XXXXXX")"
trap 'rm -rf "$stage"' EXIT

# Files a package's /usr/share/doc/NAME needs: the copyright and a Debian changelog.
docs() {
  local pkg="$1" dir="$2/usr/share/doc/$1"
  install -d "$dir"
  install -m 0644 "$here/copyright" "$dir/copyright"
  {
    echo "$pkg ($version) unstable; urgency=medium"
    echo
    echo "  * Built from fdbroker commit $commit; the upstream changes are in"
    echo "    /usr/share/doc/fdbroker/changelog.md.gz (package fdbroker)."
    echo
    echo " -- $maintainer  $(date -R -d @"${SOURCE_DATE_EPOCH:-$(git -C "$root" log -1 --format=%ct 2>/dev/null || date +%s)}")"
  } | gzip -9n > "$dir/changelog.gz"
  chmod 0644 "$dir/changelog.gz"
}

# The control file: fixed fields, then Installed-Size from the staged tree.
control() {
  local dir="$1"; shift
  install -d "$dir/DEBIAN"
  {
    printf '%s\n' "$@"
    echo "Installed-Size: $(du -sk --exclude=DEBIAN "$dir" | cut -f1)"
  } > "$dir/DEBIAN/control"
}

# Depends: of the ELF files given, by dpkg-shlibdeps (it wants a debian/control).
shlib_depends() {
  local work="$stage/shlibdeps"
  mkdir -p "$work/debian"
  printf 'Source: fdbroker\n\nPackage: fdbroker\nArchitecture: any\n' > "$work/debian/control"
  (cd "$work" && dpkg-shlibdeps -O "$@" 2>/dev/null) | sed -n 's/^shlibs:Depends=//p'
}

# ---- fdbroker ----------------------------------------------------------------------
p="$stage/fdbroker"
install -D -m 0755 "$bin" "$p/usr/bin/fdbroker"
strip --strip-unneeded --remove-section=.comment --remove-section=.note "$p/usr/bin/fdbroker"
install -D -m 0644 -t "$p$unitdir" "$root/broker/systemd/fdbroker.service" \
  "$root/broker/systemd/fdbroker.socket"
install -D -m 0644 "$root/packaging/sysusers.conf" "$p$sysusersdir/fdbroker.conf"
install -D -m 0644 "$root/packaging/policy.toml" "$p/etc/fdbroker/policy.toml"
for page in "$root"/docs/man/*.8 "$root"/docs/man/*.5; do
  section="${page##*.}"
  install -d "$p/usr/share/man/man$section"
  gzip -9n < "$page" > "$p/usr/share/man/man$section/$(basename "$page").gz"
  chmod 0644 "$p/usr/share/man/man$section/$(basename "$page").gz"
done
install -d "$p/usr/share/bash-completion/completions" "$p/usr/share/zsh/vendor-completions" \
  "$p/usr/share/fish/vendor_completions.d"
"$bin" completions bash > "$p/usr/share/bash-completion/completions/fdbroker"
"$bin" completions zsh > "$p/usr/share/zsh/vendor-completions/_fdbroker"
"$bin" completions fish > "$p/usr/share/fish/vendor_completions.d/fdbroker.fish"
chmod 0644 "$p"/usr/share/*/completions/fdbroker "$p"/usr/share/zsh/vendor-completions/_fdbroker \
  "$p"/usr/share/fish/vendor_completions.d/fdbroker.fish
docs fdbroker "$p"
d="$p/usr/share/doc/fdbroker"
install -m 0644 "$root/LICENSE-APACHE" "$root/LICENSE-MIT" "$root/SECURITY.md" \
  "$root/README.md" "$d/"
gzip -9n < "$root/CHANGELOG.md" > "$d/changelog.md.gz"
install -d "$d/examples"
install -m 0644 "$root"/policy/examples/*.toml "$d/examples/"
chmod 0644 "$d"/*.gz
control "$p" \
  "Package: fdbroker" \
  "Version: $version" \
  "Architecture: $arch" \
  "Maintainer: $maintainer" \
  "Depends: $(shlib_depends "$p/usr/bin/fdbroker"), systemd | systemd-standalone-sysusers" \
  "Section: admin" \
  "Priority: optional" \
  "Homepage: https://example.invalid/fdbroker" \
  "Description: capability-based privilege-separation broker for file access" \
  " fdbroker opens files on behalf of unprivileged, sandboxed workers and passes" \
  " their descriptors over a Unix socket (SCM_RIGHTS), deciding every request by a" \
  " policy file the operator writes. The worker that parses untrusted data holds no" \
  " filesystem access of its own." \
  " ." \
  " This package has the fdbroker daemon and command line, its socket-activated" \
  " systemd units (running as the fdbroker system user), and a policy that denies" \
  " everything until edited (/etc/fdbroker/policy.toml)."
echo /etc/fdbroker/policy.toml > "$p/DEBIAN/conffiles"
for script in postinst prerm postrm; do
  install -m 0755 "$here/fdbroker.$script" "$p/DEBIAN/$script"
done

# ---- libfdbroker-client0 and libfdbroker-client-dev ---------------------------------
lib="$stage/lib"
"$root/worker/ffi/install.sh" --no-build --profile "$profile" --target-dir "$target_dir" \
  --prefix /usr --libdir "/usr/lib/$multiarch" --destdir "$lib" >/dev/null
libdir="usr/lib/$multiarch"
real="libfdbroker_client.so.$version"

r="$stage/libfdbroker-client0"
install -d "$r/$libdir"
install -m 0644 "$lib/$libdir/$real" "$r/$libdir/$real"
strip --strip-unneeded --remove-section=.comment --remove-section=.note "$r/$libdir/$real"
ln -s "$real" "$r/$libdir/libfdbroker_client.so.0"
docs libfdbroker-client0 "$r"
control "$r" \
  "Package: libfdbroker-client0" \
  "Version: $version" \
  "Architecture: $arch" \
  "Multi-Arch: same" \
  "Maintainer: $maintainer" \
  "Depends: $(shlib_depends "$r/$libdir/$real")" \
  "Section: libs" \
  "Priority: optional" \
  "Homepage: https://example.invalid/fdbroker" \
  "Description: client library for the fdbroker file-descriptor broker" \
  " libfdbroker_client lets a C program get the files it needs from an fdbroker" \
  " broker: it asks over the broker's socket and receives open descriptors." \
  " ." \
  " This package has the shared library."
echo "libfdbroker_client 0 libfdbroker-client0 (>= $version)" > "$r/DEBIAN/shlibs"
echo "activate-noawait ldconfig" > "$r/DEBIAN/triggers"
chmod 0644 "$r/DEBIAN/shlibs" "$r/DEBIAN/triggers"

v="$stage/libfdbroker-client-dev"
install -D -m 0644 "$lib/usr/include/fdbroker.h" "$v/usr/include/fdbroker.h"
install -d "$v/$libdir/pkgconfig"
ln -s libfdbroker_client.so.0 "$v/$libdir/libfdbroker_client.so"
install -m 0644 "$lib/$libdir/libfdbroker_client.a" "$v/$libdir/"
strip --strip-debug "$v/$libdir/libfdbroker_client.a"
install -m 0644 "$lib/$libdir/pkgconfig/fdbroker-client.pc" "$v/$libdir/pkgconfig/"
install -D -m 0644 "$root/worker/ffi/examples/scan.c" "$v/usr/share/doc/libfdbroker-client-dev/examples/scan.c"
docs libfdbroker-client-dev "$v"
control "$v" \
  "Package: libfdbroker-client-dev" \
  "Version: $version" \
  "Architecture: $arch" \
  "Multi-Arch: same" \
  "Maintainer: $maintainer" \
  "Depends: libfdbroker-client0 (= $version)" \
  "Section: libdevel" \
  "Priority: optional" \
  "Homepage: https://example.invalid/fdbroker" \
  "Description: client library for the fdbroker file-descriptor broker (development)" \
  " libfdbroker_client lets a C program get the files it needs from an fdbroker" \
  " broker: it asks over the broker's socket and receives open descriptors." \
  " ." \
  " This package has the header fdbroker.h, the static library and the" \
  " pkg-config file fdbroker-client.pc:" \
  "   cc prog.c \$(pkg-config --cflags --libs fdbroker-client)"

for pkg in fdbroker libfdbroker-client0 libfdbroker-client-dev; do
  dpkg-deb --root-owner-group -Zxz --build "$stage/$pkg" "$out/${pkg}_${version}_${arch}.deb" >/dev/null
  echo "$out/${pkg}_${version}_${arch}.deb"
done
