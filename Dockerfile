# lrsl-rt serve: the runtime and its HTTP server only (no torch, no training, no export).
# Build:  docker build -t lrsl-rt .
# Run:    docker run --rm -p 8080:8080 -v "$PWD/artifacts/banking77/bundle:/bundle:ro" \
#           -e LRSL_RT_MODEL_NAME=banking77 -e LRSL_RT_WORKERS=2 lrsl-rt
# Every `lrsl-rt serve` flag is an LRSL_RT_* variable (docs/guide/serve.md); flags after the image
# name are passed to `lrsl-rt serve` and win over the variables.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY lrsl_rt ./lrsl_rt
# This checkout's own package (not pinnable by version): its dependency ranges are pyproject.toml's.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir ".[cpu,serve]" \
    && rm -rf /src \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin lrsl

WORKDIR /
USER 10001

# The bundle: mount it here read-only (above), or copy it in an image of your own built FROM this one.
ENV LRSL_RT_BUNDLE=/bundle \
    LRSL_RT_HOST=0.0.0.0 \
    LRSL_RT_PORT=8080
EXPOSE 8080

# Ready once the bundle is loaded and probed; not ready while draining (SIGTERM), so traffic stops first.
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/v2/health/ready' % os.environ.get('LRSL_RT_PORT', '8080'), timeout=2)"]

ENTRYPOINT ["lrsl-rt", "serve"]
