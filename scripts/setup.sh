#!/usr/bin/env bash
# Install everything the service and its tests need, on a fresh Debian 12 machine or again
# on one where it already ran: system packages (when root), then the Python virtualenv.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=()
[ -x /usr/lib/postgresql/15/bin/initdb ] || packages+=(postgresql-15)
[ -f /usr/share/postgresql/15/extension/postgis.control ] || packages+=(postgresql-15-postgis-3)
if [ "${OBSERVATORY_SETUP_TESTS:-0}" = 1 ]; then
    command -v ogrinfo >/dev/null || packages+=(gdal-bin)
fi
if [ ${#packages[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
        echo "setup: installing ${packages[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq "${packages[@]}" >/dev/null
    else
        echo "setup: missing system packages; run: sudo apt-get install -y ${packages[*]}" >&2
        exit 1
    fi
fi

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
# Reinstall only when the declared dependencies changed.
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
    .venv/bin/pip install -q --upgrade pip
    .venv/bin/pip install -q -e '.[test]'
    rm -f .venv/.installed-*
    touch "$stamp"
fi
