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

"$root/tests/tools/deb-unpack.sh" "$dest" "prometheus${PROMETHEUS_DEB_VERSION:+=$PROMETHEUS_DEB_VERSION}"
"$promtool" --version >/dev/null 2>&1 || { echo "install.sh: $promtool does not run" >&2; exit 1; }
"$prometheus" --version >/dev/null 2>&1 || { echo "install.sh: $prometheus does not run" >&2; exit 1; }
print_versions
