# shellcheck shell=bash
# Shared settings for the scripts in this directory; source it, don't run it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/.cache/tools"   # a small venv holding the pinned uv
VENV="$ROOT/.venv"           # the workspace environment (`uv sync` target)
UV_VERSION="0.13.9"
UV="$TOOLS/bin/uv"

# uv: sync into .venv, and always use the machine's python3 (3.11); never download one.
export UV_PROJECT_ENVIRONMENT="$VENV"
export UV_PYTHON_DOWNLOADS=never
export UV_PYTHON=python3
# Compile to bytecode at install time: imports stay fast even where PYTHONDONTWRITEBYTECODE
# is set (as on our machines), which otherwise costs seconds per `tidings` command.
export UV_COMPILE_BYTECODE=1
# An activated, unrelated virtualenv would only make uv print a warning.
unset VIRTUAL_ENV

say() { printf '==> %s\n' "$*" >&2; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
