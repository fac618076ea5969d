# Sourced by the scripts: make .venv (if missing) and install the project into it
# (again only when pyproject.toml changed). Needs nothing but Python 3.11+.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-$ROOT/.venv}"
EXTRAS="${EXTRAS:-dev,mysql}"
# The mysql extra builds mysqlclient, which needs the MariaDB (or MySQL) client headers and
# pkg-config. Without them the rest still installs, and this says what to add for MariaDB.
if [[ ",$EXTRAS," == *",mysql,"* ]] && ! { pkg-config --exists mysqlclient 2>/dev/null ||
    pkg-config --exists mariadb 2>/dev/null; }; then
  echo ">> note: the MariaDB/MySQL driver (mysqlclient) is left out: it builds against the client" >&2
  echo ">>       headers, missing here. For the MariaDB test runs: apt-get install -y libmariadb-dev pkg-config" >&2
  EXTRAS="$(echo ",$EXTRAS," | sed 's/,mysql,/,/; s/^,//; s/,$//')"
fi
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
