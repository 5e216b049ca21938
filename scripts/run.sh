#!/usr/bin/env bash
# `make run`: the demo upstream on 127.0.0.1:8080 and SHARP on its embedded
# default bootstrap (listener 0.0.0.0:10000, admin 127.0.0.1:9901).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
"$BUILD/test/upstream/sharp-test-upstream" --address 127.0.0.1 --port 8080 --name demo --quiet &
UPSTREAM=$!
trap 'kill "$UPSTREAM" 2>/dev/null || true' EXIT
cat <<MSG

  SHARP is starting on its embedded default bootstrap.
    proxy listener : http://localhost:10000/   (try: curl localhost:10000/)
    admin          : http://127.0.0.1:9901/    (/stats, /clusters, /config_dump, /ready)
    demo upstream  : http://127.0.0.1:8080/    (cluster local_service)
  Ctrl-C drains and stops.

MSG
"$BUILD/proxy/sharp" --concurrency "${SHARP_CONCURRENCY:-2}" &
SHARP=$!
trap 'kill "$SHARP" 2>/dev/null || true; kill "$UPSTREAM" 2>/dev/null || true' EXIT
wait "$SHARP"
