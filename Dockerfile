# syntax=docker/dockerfile:1
# MediaServer gateway image: build a wheel, install it with ffmpeg in a slim runtime, run as uid 1001.

FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY setup.py README.md ./
COPY gateway ./gateway
COPY streaming ./streaming
COPY auth ./auth
COPY metadata ./metadata
COPY processing ./processing
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim-bookworm
# ffmpeg/ffprobe for video probing and thumbnails; nothing else from the build stage
RUN apt-get update \
    && apt-get install -y --no-install-recommends ffmpeg=7:5.1.* \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 1001 mediaserver \
    && useradd --uid 1001 --gid 1001 --no-create-home --shell /usr/sbin/nologin mediaserver \
    && mkdir -p /data && chown 1001:1001 /data
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links=/wheels /wheels/*.whl && rm -rf /wheels

ENV HOST=0.0.0.0 \
    PORT=3000 \
    STORAGE_BACKEND=s3 \
    DATA_DIR=/data \
    LOG_FORMAT=json \
    PYTHONUNBUFFERED=1
USER 1001:1001
WORKDIR /data
EXPOSE 3000
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '3000'), timeout=4)"]
CMD ["mediaserver", "serve"]
