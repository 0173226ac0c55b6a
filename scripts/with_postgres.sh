#!/usr/bin/env bash
# Run a command with a throwaway PostgreSQL on 127.0.0.1, exporting BLIPSEARCH_TEST_POSTGRES_URL.
# Installs Debian's postgresql package when missing and running as root; otherwise runs the
# command without a server (the PostgreSQL tests then skip, saying why).
#   scripts/with_postgres.sh COMMAND...
set -uo pipefail
PORT=${BLIPSEARCH_TEST_PG_PORT:-54329}

find_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }

bin=$(find_bin)
if [ -z "$bin" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "with_postgres: installing Debian's postgresql package" >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql) \
    >/tmp/blipsearch-pg-install.log 2>&1 || echo "with_postgres: install failed (see /tmp/blipsearch-pg-install.log)" >&2
  bin=$(find_bin)
fi
if [ -z "$bin" ]; then
  echo "with_postgres: no PostgreSQL server available; PostgreSQL tests will be skipped" >&2
  exec "$@"
fi

data=$(mktemp -d /tmp/blipsearch-pg.XXXXXX)
runas=()
if [ "$(id -u)" = 0 ]; then
  chown postgres "$data"
  runas=(su postgres -s /bin/sh -c)
else
  runas=(sh -c)
fi
"${runas[@]}" "$bin/initdb -D $data -A trust -U postgres --no-sync" >"$data.initdb.log" 2>&1
if ! "${runas[@]}" "$bin/pg_ctl -D $data -w -l $data/server.log -o '-c listen_addresses=127.0.0.1 -p $PORT -k $data -c fsync=off' start" >/dev/null 2>&1; then
  echo "with_postgres: server did not start (see $data/server.log); PostgreSQL tests will be skipped" >&2
  exec "$@"
fi
stop() { "${runas[@]}" "$bin/pg_ctl -D $data -m fast stop" >/dev/null 2>&1; rm -rf "$data" "$data.initdb.log"; }
trap stop EXIT
export BLIPSEARCH_TEST_POSTGRES_URL="postgresql+psycopg://postgres@127.0.0.1:$PORT/postgres"
"$@"
