# Sourced by the scripts: make .venv (if missing) and install the project into it
# (again only when pyproject.toml changed). Needs nothing but Python 3.11+.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-$ROOT/.venv}"
EXTRAS="${EXTRAS:-dev}"
if [ ! -x "$VENV/bin/python" ]; then
  echo ">> creating $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.fluvius-installed"
want="$(cat pyproject.toml ${EXTRA_REQUIREMENTS:-} 2>/dev/null | sha256sum | cut -d' ' -f1) $EXTRAS ${PIP_EXTRA_ARGS:-}"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo ">> installing django-fluvius[$EXTRAS] into $VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet -e ".[$EXTRAS]" ${PIP_EXTRA_ARGS:-}
  echo "$want" > "$stamp"
fi
PY="$VENV/bin/python"
