#!/usr/bin/env bash
# Install (Debian packages) and start a throw-away PostgreSQL on 127.0.0.1 for the Dagster
# PostgreSQL-instance test.  Prints `export USR_TEST_PG_DSN=...` on success.
set -euo pipefail
PORT="${USR_PG_PORT:-54329}"
DATA="${USR_PG_DATA:-/tmp/usr-pg-data}"
if ! ls -d /usr/lib/postgresql/*/bin >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) >&2
  else
    echo "postgresql is not installed and we are not root" >&2; exit 1
  fi
fi
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
RUNAS=()
if [ "$(id -u)" = 0 ]; then RUNAS=(runuser -u postgres --); fi
if [ -f "$DATA/postmaster.pid" ]; then
  "${RUNAS[@]}" "$PGBIN/pg_ctl" -D "$DATA" stop -m fast >&2 || true
fi
rm -rf "$DATA"; mkdir -p "$DATA"
[ "$(id -u)" = 0 ] && chown postgres:postgres "$DATA"
"${RUNAS[@]}" "$PGBIN/initdb" -D "$DATA" -A trust -U postgres >&2
"${RUNAS[@]}" "$PGBIN/pg_ctl" -D "$DATA" -l "$DATA/server.log" -w \
  -o "-c listen_addresses=127.0.0.1 -p $PORT -k /tmp" start >&2
echo "export USR_TEST_PG_DSN=postgresql://postgres@127.0.0.1:$PORT/postgres"
