#!/usr/bin/env bash
# Installs Prometheus and promtool from the Debian `prometheus` package into .venv/prometheus,
# without a system install: `apt-get download` fetches the .deb, `dpkg -x` unpacks it. Nothing
# is configured, no service is started, no dependency is installed.
#
#   bash prometheus/install.sh        # idempotent; prints the versions
#
# Result: .venv/prometheus/usr/bin/{prometheus,promtool}. The tests find them there (or through
# PROMETHEUS_BIN / PROMTOOL_BIN). PROMETHEUS_DEB_VERSION=2.42.0+ds-5+b6 pins a package version;
# by default apt's candidate is taken.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$root/.venv/prometheus"
promtool="$dest/usr/bin/promtool"
prometheus="$dest/usr/bin/prometheus"

print_versions() {
  "$prometheus" --version 2>&1 | head -n 1
  "$promtool" --version 2>&1 | head -n 1
}

if [[ -x "$promtool" && -x "$prometheus" ]] && "$promtool" --version >/dev/null 2>&1 \
  && "$prometheus" --version >/dev/null 2>&1; then
  print_versions
  exit 0
fi

command -v apt-get >/dev/null || { echo "install.sh: apt-get not found (Debian/Ubuntu needed)" >&2; exit 1; }
command -v dpkg >/dev/null || { echo "install.sh: dpkg not found (Debian/Ubuntu needed)" >&2; exit 1; }

pkg="prometheus${PROMETHEUS_DEB_VERSION:+=$PROMETHEUS_DEB_VERSION}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# apt downloads as its sandbox user _apt when run as root; let it write here (else it warns).
if [[ $(id -u) -eq 0 ]] && id _apt >/dev/null 2>&1; then
  chown _apt "$tmp"
fi

download() { (cd "$tmp" && apt-get download -q "$pkg"); }

echo "downloading the Debian package $pkg"
if ! download; then
  if [[ $(id -u) -eq 0 ]]; then
    echo "apt-get download failed; refreshing the package lists (apt-get update) and retrying"
    apt-get update -q
    download
  else
    echo "install.sh: apt-get download $pkg failed; the package lists may be missing." >&2
    echo "Run 'sudo apt-get update' once, then run this script again." >&2
    exit 1
  fi
fi

deb=("$tmp"/prometheus_*.deb)
[[ -f "${deb[0]}" ]] || { echo "install.sh: no prometheus .deb downloaded" >&2; exit 1; }
echo "unpacking $(basename "${deb[0]}") into ${dest#"$root"/}"
rm -rf "$dest"
mkdir -p "$dest"
dpkg -x "${deb[0]}" "$dest"
"$promtool" --version >/dev/null 2>&1 || { echo "install.sh: $promtool does not run" >&2; exit 1; }
"$prometheus" --version >/dev/null 2>&1 || { echo "install.sh: $prometheus does not run" >&2; exit 1; }
print_versions
