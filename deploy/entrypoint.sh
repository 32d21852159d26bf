#!/bin/sh
# Entry point of every process kind of the image (deploy/Dockerfile): prepare the container, then exec the
# command, which so receives the stop signal itself (Celery's warm shutdown, gunicorn's graceful stop).
set -eu

# Prometheus multiprocess mode: each process writes its samples to files in PROMETHEUS_MULTIPROC_DIR, and /metrics
# (or `manage.py metrics_server`) adds up every file there. A restarted container keeps its filesystem, so the
# files of its previous processes would be added to the new ones: empty the directory before anything records.
# One directory per recording container: never share it with another container that records (this would wipe
# that container's live files).
if [ -n "${PROMETHEUS_MULTIPROC_DIR:-}" ]; then
    mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
    rm -rf "${PROMETHEUS_MULTIPROC_DIR:?}"/*
fi

# A worker container serves its own pool's metrics (deploy/docker-compose.yml): with METRICS_EXPORTER_PORT set,
# `manage.py metrics_server` runs beside the command, detached (started from a subshell, it is re-parented to the
# container's init process, which reaps it). Bind it to the container's private network only.
if [ -n "${METRICS_EXPORTER_PORT:-}" ]; then
    (python manage.py metrics_server --bind "${METRICS_EXPORTER_BIND:-0.0.0.0}" --port "$METRICS_EXPORTER_PORT" &)
fi

exec "$@"
