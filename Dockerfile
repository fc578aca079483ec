# syntax=docker/dockerfile:1
# MediaServer gateway image, in three stages:
#   web:     the upload page's Uppy bundle, from web/package-lock.json (npm ci)
#   build:   the gateway wheel, with the bundle in gateway/static/vendor/
#   runtime: Python 3.11 slim with ffmpeg, exactly the locked dependencies (requirements.lock,
#            hashes required) and the wheel without dependencies; uid 1001, port 3000.
# Keep PORT, EXPOSE and the HEALTHCHECK path in agreement with docker-compose.yml and
# infra/terraform/ecs.tf: scripts/check_infra.sh checks it (ci/check_agreement.py).

FROM node:22.21.1-bookworm-slim AS web
WORKDIR /web
COPY web/package.json web/package-lock.json ./
# every version comes from the lock file; no install scripts run (Uppy's bundle ships prebuilt)
RUN npm ci --ignore-scripts --no-audit --no-fund --loglevel=error \
    && mkdir /vendor \
    && cp node_modules/uppy/dist/uppy.min.js node_modules/uppy/dist/uppy.min.css /vendor/

FROM python:3.11.14-slim-bookworm AS build
WORKDIR /src
COPY setup.py README.md ./
COPY gateway ./gateway
COPY streaming ./streaming
COPY auth ./auth
COPY metadata ./metadata
COPY processing ./processing
# .dockerignore keeps a local gateway/static/vendor out: the bundle is always the one built above
COPY --from=web /vendor/ ./gateway/static/vendor/
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
    && python -c "import glob, sys, zipfile; names = zipfile.ZipFile(glob.glob('/wheels/*.whl')[0]).namelist(); sys.exit(0 if 'gateway/static/vendor/uppy.min.js' in names else 'the wheel lacks the Uppy bundle')"

FROM python:3.11.14-slim-bookworm
# ffmpeg/ffprobe for video probing and thumbnails; nothing else from the build stages
RUN apt-get update \
    && apt-get install -y --no-install-recommends ffmpeg=7:5.1.* \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 1001 mediaserver \
    && useradd --uid 1001 --gid 1001 --no-create-home --shell /usr/sbin/nologin mediaserver \
    && mkdir -p /data && chown 1001:1001 /data
# the runtime dependencies, each pinned with its hashes; then the gateway itself without any
COPY requirements.lock /tmp/requirements.lock
RUN pip install --no-cache-dir --require-hashes -r /tmp/requirements.lock && rm /tmp/requirements.lock
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-deps /wheels/*.whl && rm -rf /wheels && pip check \
    && python -m streaming.stores.s3_model /opt/mediaserver

ENV HOST=0.0.0.0 \
    PORT=3000 \
    STORAGE_BACKEND=s3 \
    DATA_DIR=/data \
    S3_MODEL_DIR=/opt/mediaserver \
    LOG_FORMAT=json \
    PYTHONUNBUFFERED=1
USER 1001:1001
WORKDIR /data
EXPOSE 3000
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '3000'), timeout=4)"]
CMD ["mediaserver", "serve"]
