#!/usr/bin/env bash
# Serve on http://127.0.0.1:8000 (override with --host/--port). Creates .venv on first use.
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
exec colorize-service serve "$@"
