#!/usr/bin/env bash
# Installs the benchmark's load generator and upstream into .venv/bench, without a system install
# (the same way prometheus/install.sh does): `apt-get download` fetches the Debian packages and
# `dpkg -x` unpacks them. Nothing is configured, no service is started (a system-wide nginx
# install would enable and start a service on port 80 on most machines).
#
#   bash envoy/bench/install-tools.sh     # idempotent; prints the versions
#
# - wrk 4.1.0 (Debian `wrk`) and the LuaJIT runtime it links (`libluajit-5.1-2`);
# - nginx 1.22 (Debian `nginx`: in bookworm `nginx-light` is a transitional package that only
#   pulls `nginx` plus an echo module the benchmark does not use).
#
# Result: .venv/bench/usr/bin/wrk, .venv/bench/usr/sbin/nginx, .venv/bench/usr/lib/<triplet>/.
# The bench finds them there, or through WRK_BIN / NGINX_BIN.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
dest="$root/.venv/bench"
wrk="$dest/usr/bin/wrk"
nginx="$dest/usr/sbin/nginx"
libdir="$(ls -d "$dest"/usr/lib/*-linux-gnu 2>/dev/null | head -n 1 || true)"

# `wrk --version` prints its banner and exits 1.
wrk_version() { LD_LIBRARY_PATH="${libdir:-}" "$wrk" --version 2>&1 || true; }

runs() {
  [[ "$(wrk_version)" == wrk* ]] && "$nginx" -v >/dev/null 2>&1
}

print_versions() {
  wrk_version | head -n 1
  "$nginx" -v 2>&1 | head -n 1
}

if [[ -x "$wrk" && -x "$nginx" ]] && runs; then
  print_versions
  exit 0
fi

"$root/tests/tools/deb-unpack.sh" "$dest" wrk libluajit-5.1-2 nginx
libdir="$(ls -d "$dest"/usr/lib/*-linux-gnu | head -n 1)"
runs || { echo "install-tools.sh: wrk or nginx does not run from $dest" >&2; exit 1; }
print_versions
