#!/usr/bin/env bash
# Source this file: it starts a throwaway PostgreSQL server on loopback for the test suite and
# exports COMPANION_TEST_DATABASE_URL (the lifecycle tests then run against it as well as SQLite).
# Installs Debian's `postgresql` package when it is missing. The server stops when the shell exits.

companion_pg_bin() {
    ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true
}

if [ -z "$(companion_pg_bin)" ]; then
    echo "ci: installing postgresql (Debian package)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q postgresql >/dev/null
fi
PG_BIN="$(companion_pg_bin)"
if [ -z "$PG_BIN" ]; then
    echo "ci: PostgreSQL is not installed and could not be installed" >&2
    return 1 2>/dev/null || exit 1
fi

PG_PORT="${COMPANION_PG_PORT:-54329}"
PG_DATA="$(mktemp -d /tmp/companion-pg.XXXXXX)"
if [ "$(id -u)" = 0 ]; then
    chown postgres:postgres "$PG_DATA"
    PG_AS=(runuser -u postgres --)
else
    PG_AS=()
fi
"${PG_AS[@]}" "$PG_BIN/initdb" -D "$PG_DATA" -U postgres -A trust --no-sync >"$PG_DATA.initdb.log" 2>&1 \
    || { cat "$PG_DATA.initdb.log" >&2; return 1 2>/dev/null || exit 1; }
"${PG_AS[@]}" "$PG_BIN/pg_ctl" -D "$PG_DATA" -w -l "$PG_DATA/server.log" \
    -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $PG_DATA -c fsync=off -c max_connections=200" start >/dev/null
companion_pg_stop() {
    "${PG_AS[@]}" "$PG_BIN/pg_ctl" -D "$PG_DATA" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$PG_DATA" "$PG_DATA.initdb.log"
}
trap companion_pg_stop EXIT

"$PG_BIN/psql" -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres \
    -c "CREATE USER companion PASSWORD 'companion'" -c "CREATE DATABASE companion_test OWNER companion"
export COMPANION_TEST_DATABASE_URL="postgresql+psycopg://companion:companion@127.0.0.1:$PG_PORT/companion_test"
echo "ci: PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$PG_PORT for the tests"
