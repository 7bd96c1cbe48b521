#!/usr/bin/env bash
# The one-command demo: a simulated chemical site streams through plantwatch with an embedded MQTT
# broker and an embedded PostgreSQL (no root, no configuration, nothing else to install).
#   bash deploy/dev/demo.sh                 # about a minute
#   bash deploy/dev/demo.sh --duration 300  # longer; any `plantwatch demo` option passes through
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then
  python3 -c 'import sys; assert sys.version_info >= (3, 11), "plantwatch needs Python 3.11 or newer"'
  rm -rf .venv
  python3 -m venv .venv
fi
# (the grep drops pip's per-package warnings about a machine's configured but absent local index mirrors)
.venv/bin/python -m pip install --quiet --disable-pip-version-check -c deploy/dev/constraints.txt -e . 2>&1 \
  | { grep -v "is ignored: it is neither a file nor a directory" || true; }
exec .venv/bin/plantwatch demo "$@"
