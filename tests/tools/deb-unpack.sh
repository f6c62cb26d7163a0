#!/usr/bin/env bash
# Unpacks Debian packages into a directory without a system install: `apt-get download` fetches
# the .debs (refreshing the package lists first when that fails and we are root), `dpkg -x`
# unpacks each into DEST (emptied first). Nothing is configured, no service is started, no
# dependency is resolved: list every package needed.
#
#   tests/tools/deb-unpack.sh DEST PKG [PKG...]
#
# Used by prometheus/install.sh and envoy/bench/install-tools.sh.
set -euo pipefail

[[ $# -ge 2 ]] || { echo "usage: deb-unpack.sh DEST PKG [PKG...]" >&2; exit 1; }
dest="$1"
shift
pkgs=("$@")

command -v apt-get >/dev/null || { echo "deb-unpack.sh: apt-get not found (Debian/Ubuntu needed)" >&2; exit 1; }
command -v dpkg >/dev/null || { echo "deb-unpack.sh: dpkg not found (Debian/Ubuntu needed)" >&2; exit 1; }

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# apt downloads as its sandbox user _apt when run as root; let it write here (else it warns).
if [[ $(id -u) -eq 0 ]] && id _apt >/dev/null 2>&1; then
  chown _apt "$tmp"
fi

download() { (cd "$tmp" && apt-get download -q "${pkgs[@]}"); }

echo "downloading the Debian packages ${pkgs[*]}"
if ! download; then
  if [[ $(id -u) -eq 0 ]]; then
    echo "apt-get download failed; refreshing the package lists (apt-get update) and retrying"
    apt-get update -q
    download
  else
    echo "deb-unpack.sh: apt-get download failed; the package lists may be missing." >&2
    echo "Run 'sudo apt-get update' once, then run this again." >&2
    exit 1
  fi
fi

debs=("$tmp"/*.deb)
[[ -f "${debs[0]}" ]] || { echo "deb-unpack.sh: nothing was downloaded" >&2; exit 1; }
rm -rf "$dest"
mkdir -p "$dest"
for deb in "${debs[@]}"; do
  echo "unpacking $(basename "$deb") into $dest"
  dpkg -x "$deb" "$dest"
done
