# The service's image: the API (the default command) and the workers (`observatory worker`,
# see compose.yaml). PostGIS runs elsewhere; the service only needs its URL.

# The web pages' JavaScript: MapLibre GL JS from npm, pinned by web/package-lock.json (the
# same files scripts/setup.sh copies into app/static/vendor; nothing comes from a CDN).
FROM node:20-bookworm-slim AS web
WORKDIR /web
COPY web/package.json web/package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error \
    && mkdir -p /vendor \
    && cp node_modules/maplibre-gl/dist/maplibre-gl.js node_modules/maplibre-gl/dist/maplibre-gl.css \
          node_modules/maplibre-gl/LICENSE.txt /vendor/

FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    OBSERVATORY_ENVIRONMENT=production \
    NUMBA_CACHE_DIR=/home/observatory/numba-cache

RUN useradd --create-home --uid 10001 observatory \
    && install -d -o observatory -g observatory /home/observatory/numba-cache
WORKDIR /app

# Dependencies first, so code changes do not reinstall them. Every package ships a wheel
# (pyogrio and pyproj bundle GDAL and PROJ), so no compiler or system GDAL is needed.
COPY pyproject.toml README.md ./
COPY app/__init__.py app/__init__.py
RUN mkdir -p spatial indexes boundaries migrations \
    && touch spatial/__init__.py indexes/__init__.py boundaries/__init__.py migrations/__init__.py \
    && pip install . && pip uninstall -y observatory

COPY app app
COPY --from=web /vendor app/static/vendor
COPY spatial spatial
COPY indexes indexes
COPY boundaries boundaries
COPY migrations migrations
COPY config config
RUN pip install --no-deps .

USER observatory
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s CMD python -c \
    "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health')"
# Migrate, then serve. Put a reverse proxy with TLS in front in production. The analyses
# run in workers: the same image with the command `observatory worker` (as many as wanted).
CMD ["sh", "-c", "observatory migrate && observatory serve --host 0.0.0.0 --port 8000 --workers 2"]
