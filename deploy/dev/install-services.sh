#!/usr/bin/env bash
# Installs what plantwatch's tests and benchmarks need on a Debian bookworm machine (run as root):
#   - Mosquitto (broker binary only; tests start their own throwaway instance),
#   - PostgreSQL 15 server binaries (tests start their own throwaway cluster),
#   - TimescaleDB (Apache-2 edition), built from Debian trixie's source package,
#     because bookworm ships no TimescaleDB package,
#   - Chromium and its WebDriver (Debian's packages) for the headless browser tests of the
#     operator console and the incident reports (selenium drives /usr/bin/chromium).
# Idempotent: each step is skipped when its result is already present.
set -euo pipefail

PG_MAJOR="${PG_MAJOR:-15}"
PG_BIN="/usr/lib/postgresql/${PG_MAJOR}/bin"
CACHE="${PLANTWATCH_CACHE:-/var/cache/plantwatch-build}"
log() { printf '[install-services] %s\n' "$*" >&2; }

need_pkgs=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need_pkgs+=(mosquitto)
[ -x "${PG_BIN}/postgres" ] || need_pkgs+=("postgresql-${PG_MAJOR}")
[ -x "${PG_BIN}/pg_config" ] || [ -f "/usr/include/postgresql/${PG_MAJOR}/server/postgres.h" ] || need_pkgs+=("postgresql-server-dev-${PG_MAJOR}")
[ -x /usr/bin/chromium ] || need_pkgs+=(chromium)
[ -x /usr/bin/chromedriver ] || need_pkgs+=(chromium-driver)
TS_CONTROL="/usr/share/postgresql/${PG_MAJOR}/extension/timescaledb.control"
if [ ! -f "$TS_CONTROL" ]; then
  for p in build-essential cmake dpkg-dev; do dpkg -s "$p" >/dev/null 2>&1 || need_pkgs+=("$p"); done
  dpkg -s "postgresql-server-dev-${PG_MAJOR}" >/dev/null 2>&1 || need_pkgs+=("postgresql-server-dev-${PG_MAJOR}")
fi

if [ "${#need_pkgs[@]}" -gt 0 ]; then
  log "apt-get install ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # policy-rc.d keeps Debian's postinst from starting system-wide services: tests run their own.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi

if [ ! -f "$TS_CONTROL" ]; then
  log "building TimescaleDB (Apache-2 edition) from Debian trixie's source package"
  mkdir -p "$CACHE/apt/lists/partial" "$CACHE/src"
  echo "deb-src http://deb.debian.org/debian trixie main" > "$CACHE/apt/sources.list"
  APT_OPTS=(-o "Dir::Etc::SourceList=$CACHE/apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
            -o "Dir::State::Lists=$CACHE/apt/lists" -o APT::Get::Only-Source=true)
  apt-get "${APT_OPTS[@]}" update -qq
  cd "$CACHE/src"
  rm -rf timescaledb-*/
  apt-get "${APT_OPTS[@]}" source --download-only timescaledb >/dev/null 2>&1 || apt-get "${APT_OPTS[@]}" source --download-only timescaledb
  dpkg-source --no-check -x timescaledb_*.dsc >/dev/null
  cd "$(find . -maxdepth 1 -type d -name 'timescaledb-*' | head -n1)"
  PATH="${PG_BIN}:$PATH" ./bootstrap -DAPACHE_ONLY=ON -DREGRESS_CHECKS=OFF -DTAP_CHECKS=OFF \
      -DWARNINGS_AS_ERRORS=OFF -DPG_CONFIG="${PG_BIN}/pg_config" >/dev/null
  make -C build -j"$(nproc)" install >/dev/null
  log "TimescaleDB installed: $(grep default_version "$TS_CONTROL")"
fi
log "ok: $(/usr/bin/chromium --version 2>/dev/null || echo 'chromium missing')"
log "ok: mosquitto $(mosquitto -h 2>/dev/null | head -n1 | awk '{print $3}'), postgres $(${PG_BIN}/postgres --version | awk '{print $3}'), timescaledb $(grep default_version "$TS_CONTROL" | tr -d "'" | awk '{print $3}')"
