#!/usr/bin/env bash
# Install (Debian package redis-server) and start a throw-away Redis on 127.0.0.1 for the dagster-celery tests
# (broker and result backend).  Prints `export USR_TEST_REDIS_URL=...` on success.
set -euo pipefail
PORT="${USR_REDIS_PORT:-56379}"
DATA="${USR_REDIS_DATA:-/tmp/usr-redis-data}"
if ! command -v redis-server >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server) >&2
  else
    echo "redis-server is not installed and we are not root" >&2; exit 1
  fi
fi
if redis-cli -h 127.0.0.1 -p "$PORT" ping >/dev/null 2>&1; then
  redis-cli -h 127.0.0.1 -p "$PORT" shutdown nosave >&2 || true
  sleep 0.5
fi
rm -rf "$DATA"; mkdir -p "$DATA"
redis-server --bind 127.0.0.1 --port "$PORT" --dir "$DATA" --save "" --appendonly no --daemonize yes \
  --logfile "$DATA/redis.log" --pidfile "$DATA/redis.pid" >&2
for _ in $(seq 1 50); do
  if redis-cli -h 127.0.0.1 -p "$PORT" ping 2>/dev/null | grep -q PONG; then
    echo "export USR_TEST_REDIS_URL=redis://127.0.0.1:$PORT/0"
    exit 0
  fi
  sleep 0.1
done
echo "Redis did not answer on 127.0.0.1:$PORT (log: $DATA/redis.log)" >&2
exit 1
