#!/usr/bin/env bash
# Entrypoint of the email-streaming Flink image (docker/flink/Dockerfile).
#
# jobmanager | taskmanager | standalone-job | history-server:
#   1. $FLINK_HOME/conf/config.yaml := the repo's flink-conf/config.yaml (bind-mounted
#      read-only at $EMAIL_STREAMING_FLINK_CONF) + the image's Java 17 options
#      (render_config.py), rebuilt on every start so edits to the repo file apply;
#   2. the official image's /docker-entrypoint.sh then sets jobmanager.rpc.address and
#      applies FLINK_PROPERTIES (the per-container keys in docker-compose.yml) and starts
#      the daemon in the foreground.
# Anything else (e.g. `python -m stack topics`) runs as given, in /opt/email-streaming.
set -euo pipefail

case "${1:-}" in
  jobmanager | taskmanager | standalone-job | history-server)
    python "$EMAIL_STREAMING_DOCKER/render_config.py" \
      "$EMAIL_STREAMING_FLINK_CONF" \
      "$EMAIL_STREAMING_DOCKER/flink-image-config.yaml" \
      "$FLINK_HOME/conf/config.yaml"
    # Daemons run from FLINK_HOME, not from the project copy, so that the Python code a job
    # ships (-pyfs) is what its operators import, never a stale copy in the working dir.
    cd "$FLINK_HOME"
    exec /docker-entrypoint.sh "$@"
    ;;
  *)
    exec "$@"
    ;;
esac
