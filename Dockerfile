# crmsync as a service: `crmsync serve` on the configuration at /etc/crmsync/crmsync.toml
# (a file, or a directory with one file per store: override the command). See
# docs/service.md and compose.yaml (with PostgreSQL).
#
#   docker build -t crmsync .
#   docker run --rm -v "$PWD/crmsync.toml:/etc/crmsync/crmsync.toml:ro" -p 9464:9464 crmsync
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CRMSYNC_OBSERVE__HOST=0.0.0.0

# the service never runs as root; /etc/crmsync/var is where relative paths of the
# example configuration (SQLite file, outbox) land: a volume mounted there keeps it
RUN groupadd --system --gid 10001 crmsync \
    && useradd --system --uid 10001 --gid crmsync --home-dir /var/lib/crmsync \
       --create-home --shell /usr/sbin/nologin crmsync \
    && mkdir -p /etc/crmsync/var \
    && chown crmsync:crmsync /etc/crmsync/var

WORKDIR /opt/crmsync

# the dependencies first, each checked against the lock's hashes (a layer that changes
# only with the lock)
COPY requirements.lock ./
RUN pip install --require-hashes -r requirements.lock

# then crmsync itself, without resolving anything again
COPY pyproject.toml README.md scheduler.py ./
COPY crmsync ./crmsync
COPY engine ./engine
COPY cli ./cli
COPY connectors ./connectors
COPY mappings ./mappings
COPY state ./state
COPY service ./service
COPY distributed ./distributed
RUN pip install --no-deps . \
    && rm -rf /opt/crmsync/build /opt/crmsync/*.egg-info

USER crmsync:crmsync
WORKDIR /etc/crmsync

# /healthz, /readyz and /metrics ([observe] port; CRMSYNC_OBSERVE__PORT overrides it)
EXPOSE 9464
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('CRMSYNC_OBSERVE__PORT', '9464') + '/healthz', timeout=4)"

# SIGTERM (docker stop) ends the runs under way after their batch in flight: give the
# container more than [serve] stop_grace_seconds (docker stop -t, compose's
# stop_grace_period); SIGHUP (docker kill -s HUP) reloads the configuration
STOPSIGNAL SIGTERM
ENTRYPOINT ["crmsync"]
CMD ["serve", "--config", "/etc/crmsync/crmsync.toml"]
