#!/usr/bin/env bash
# Install everything the service and its tests need, on a fresh Debian 12 machine or again
# on one where it already ran: system packages (when root), the Python virtualenv, then the
# web pages' JavaScript (MapLibre GL JS from npm, copied into app/static/vendor).
set -euo pipefail
cd "$(dirname "$0")/.."

packages=()
[ -x /usr/lib/postgresql/15/bin/initdb ] || packages+=(postgresql-15)
[ -f /usr/share/postgresql/15/extension/postgis.control ] || packages+=(postgresql-15-postgis-3)
if [ "${OBSERVATORY_SETUP_TESTS:-0}" = 1 ]; then
    command -v ogrinfo >/dev/null || packages+=(gdal-bin)
    # The report tests read the PDF (pdftotext) and render its pages to PNG (pdftoppm).
    command -v pdftoppm >/dev/null || packages+=(poppler-utils)
    # The browser tests drive Debian's Chromium: Playwright's own browser download does not
    # work on these machines.
    [ -x /usr/bin/chromium ] || packages+=(chromium)
    # QGIS as the real client (tests/e2e/test_qgis.py, scripts/verify_qgis.py): Debian's
    # PyQGIS for the system Python, and the providers package holding OGC API Features.
    # About 215 MB to download and 1 GB installed; under 2 minutes.
    if ! /usr/bin/python3 -c 'import qgis.core' 2>/dev/null \
        || [ ! -f /usr/lib/qgis/plugins/libprovider_wfs.so ]; then
        packages+=(python3-qgis qgis-providers)
    fi
fi
command -v npm >/dev/null || packages+=(nodejs npm)
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

# MapLibre GL JS is a declared npm dependency (web/package.json, pinned by its lockfile);
# the pages load it from /static/vendor, never from a CDN, so they work on an intranet.
vendor=app/static/vendor
lock=$(sha256sum web/package-lock.json | cut -c1-16)
if [ ! -f "$vendor/.installed-$lock" ]; then
    (cd web && npm ci --no-audit --no-fund --loglevel=error)
    rm -rf "$vendor"
    mkdir -p "$vendor"
    cp web/node_modules/maplibre-gl/dist/maplibre-gl.js \
       web/node_modules/maplibre-gl/dist/maplibre-gl.css \
       web/node_modules/maplibre-gl/LICENSE.txt "$vendor/"
    touch "$vendor/.installed-$lock"
fi
