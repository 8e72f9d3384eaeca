#!/usr/bin/env bash
# A throwaway PostgreSQL cluster on 127.0.0.1 and a unix socket, for the tests and for trying
# facetrail's PostgreSQL store. It is never a production setup (docs/postgres.md).
#
#   bash scripts/postgres-local.sh start DIR [PORT]   # prints the URL to use as FACETRAIL_STORE_URL
#   bash scripts/postgres-local.sh stop DIR
#
# Installs Debian's postgresql package when it is missing and this runs as root with apt-get.
# As root, the cluster runs as the 'postgres' system user; otherwise as the calling user.
set -euo pipefail

usage() { echo "usage: $0 start DIR [PORT] | stop DIR" >&2; exit 2; }
[ $# -ge 2 ] || usage
action=$1
dir=$(mkdir -p "$2" && cd "$2" && pwd)

bindir() {
    local found
    found=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
    if [ -z "$found" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >&2 && apt-get install -y -qq postgresql >/dev/null
        found=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
    fi
    if [ -z "$found" ]; then
        echo "PostgreSQL is not installed (Debian: apt-get install postgresql)" >&2
        exit 1
    fi
    echo "$found"
}

as_owner() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

case $action in
start)
    bin=$(bindir)
    port=${3:-$(free_port)}
    if [ "$(id -u)" = 0 ]; then chown postgres: "$dir"; fi
    if [ ! -f "$dir/data/PG_VERSION" ]; then
        as_owner "$bin/initdb" -D "$dir/data" -U facetrail --auth=trust -E UTF8 \
            --no-instructions >"$dir/initdb.log"
    fi
    # Loopback and a socket in DIR only; fsync off: a throwaway cluster for tests. WAL
    # segments a checkpoint no longer needs are deleted, not renamed and reused with their old
    # content, as an erasure requires (docs/postgres.md).
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -o \
        "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c full_page_writes=off \
         -c synchronous_commit=off -c max_connections=200 -c wal_recycle=off \
         -c wal_keep_size=0" start >/dev/null
    echo "$port" >"$dir/port"
    as_owner "$bin/psql" -h "$dir" -p "$port" -U facetrail -d postgres -qAt \
        -c "SELECT 1 FROM pg_database WHERE datname='facetrail'" | grep -q 1 ||
        as_owner "$bin/createdb" -h "$dir" -p "$port" -U facetrail facetrail
    echo "postgresql://facetrail@127.0.0.1:$port/facetrail"
    ;;
stop)
    bin=$(bindir)
    if [ -f "$dir/data/postmaster.pid" ]; then
        as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
    fi
    ;;
*) usage ;;
esac
