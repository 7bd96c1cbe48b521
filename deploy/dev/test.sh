#!/usr/bin/env bash
# Runs plantwatch's test suite on a Debian bookworm machine (CI, or a developer's):
#   1. installs Mosquitto, PostgreSQL 15 and TimescaleDB with deploy/dev/install-services.sh
#      (as root, or through sudo; it skips whatever is already installed),
#   2. creates .venv with Python 3.11 if it is missing and installs plantwatch with its test extras,
#   3. runs pytest, passing extra arguments through:  bash deploy/dev/test.sh -k store -x
# The tests start their own Mosquitto and PostgreSQL on free ports; system services are never used.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
log() { printf '[test.sh] %s\n' "$*" >&2; }
started=$(date +%s)

if [ "$(id -u)" -eq 0 ]; then
  bash deploy/dev/install-services.sh
elif [ -x /usr/sbin/mosquitto ] && [ -x /usr/lib/postgresql/15/bin/postgres ] \
     && [ -f /usr/share/postgresql/15/extension/timescaledb.control ] \
     && [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
  log "services present (not root: skipping install-services.sh)"
else
  log "installing services with sudo"
  sudo bash deploy/dev/install-services.sh
fi

if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then
  py=""
  for cand in python3.11 python3; do
    if command -v "$cand" >/dev/null 2>&1 \
       && "$cand" -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then
      py=$cand; break
    fi
  done
  if [ -z "$py" ]; then
    log "no Python >= 3.11 found (on Debian bookworm: apt-get install python3 python3-venv)"; exit 1
  fi
  log "creating .venv with $($py --version)"
  rm -rf .venv
  "$py" -m venv .venv
fi
# Installs the locked versions (deploy/dev/constraints.txt), so a fresh machine tests exactly
# what was tested before; re-installs only when pyproject.toml or the lock changed.
stamp=.venv/.plantwatch-pyproject.sha256
if [ "$(cat "$stamp" 2>/dev/null)" != "$(sha256sum pyproject.toml deploy/dev/constraints.txt)" ]; then
  log "pip install -c deploy/dev/constraints.txt -e '.[test]'"
  # (the grep drops pip's per-package warnings about this machine's absent local index mirrors)
  .venv/bin/python -m pip install --quiet --disable-pip-version-check \
      -c deploy/dev/constraints.txt -e '.[test]' 2>&1 \
    | { grep -v "is ignored: it is neither a file nor a directory" || true; }
  sha256sum pyproject.toml deploy/dev/constraints.txt > "$stamp"
fi

log "setup took $(( $(date +%s) - started )) s; running pytest"
# pytest's exit code is ours: 5 (no tests collected) fails the run on purpose.
# Three worker processes (pytest-xdist), one test file per worker at a time: each worker starts
# its own Mosquitto and PostgreSQL. PYTEST_WORKERS=0 runs in one process.
exec .venv/bin/python -m pytest -q -ra -n "${PYTEST_WORKERS:-3}" --dist loadfile "$@"
