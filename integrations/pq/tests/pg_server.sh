#!/usr/bin/env bash
# A private PostgreSQL server for the tests and the bench.
#
#   pg_server.sh start DIR   initdb + start; writes DIR/conninfo and DIR/pid
#   pg_server.sh stop DIR    stops it (also a stopped or half-started one) and
#                            removes its data; stops the servers of DIR/*/ too
#
# The data lives in a fresh mktemp directory under /tmp owned by the
# unprivileged `postgres` user (initdb refuses to run as root; build trees may
# not be readable by that user). DIR/pgdir records where. The server listens
# only on a Unix socket in that private directory (listen_addresses=''), so
# the port number only names the socket file and never collides with another
# server; several builds can each run their own. fsync=off: the data is
# thrown away.
set -euo pipefail
PGBIN=${PGBIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}
cmd=${1:-}; dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: $0 start|stop DIR" >&2; exit 2; }

as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

stop_one() {
  local d=$1 pg
  [ -f "$d/pgdir" ] || return 0
  pg=$(cat "$d/pgdir")
  if [ -f "$pg/data/postmaster.pid" ]; then
    local pid; pid=$(head -1 "$pg/data/postmaster.pid")
    # A test may have left the postmaster or a backend stopped (SIGSTOP).
    if [ -n "$pid" ]; then
      kill -CONT "$pid" 2>/dev/null || true
      pkill -CONT -P "$pid" 2>/dev/null || true
    fi
    as_pg "$PGBIN/pg_ctl" -D "$pg/data" -m immediate -w -t 30 stop >/dev/null 2>&1 ||
      { [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null; true; }
  fi
  rm -rf "$pg"
  rm -f "$d/pgdir" "$d/conninfo" "$d/pid"
}

case $cmd in
start)
  mkdir -p "$dir"
  stop_one "$dir"     # a leftover of an interrupted run
  pg=$(mktemp -d /tmp/ctxpq.XXXXXX)
  echo "$pg" >"$dir/pgdir"
  chown postgres: "$pg" 2>/dev/null || true
  chmod 700 "$pg"
  as_pg mkdir -p "$pg/sock"
  as_pg "$PGBIN/initdb" -D "$pg/data" -A trust -U postgres --no-sync -E UTF8 \
    >"$pg/initdb.log" 2>&1 || { cat "$pg/initdb.log" >&2; exit 1; }
  port=$(( 20000 + RANDOM % 20000 ))
  cat >>"$pg/data/postgresql.conf" <<CONF
listen_addresses = ''
unix_socket_directories = '$pg/sock'
port = $port
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
shared_buffers = 16MB
CONF
  if ! as_pg "$PGBIN/pg_ctl" -D "$pg/data" -l "$pg/server.log" -w -t 120 start >/dev/null; then
    cat "$pg/server.log" >&2; exit 1
  fi
  head -1 "$pg/data/postmaster.pid" >"$dir/pid"
  echo "host=$pg/sock port=$port user=postgres dbname=postgres" >"$dir/conninfo"
  ;;
stop)
  [ -d "$dir" ] || exit 0
  for sub in "$dir"/*/; do [ -f "$sub/pgdir" ] && stop_one "${sub%/}"; done
  stop_one "$dir"
  ;;
*) echo "usage: $0 start|stop DIR" >&2; exit 2 ;;
esac
