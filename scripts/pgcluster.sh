#!/usr/bin/env bash
# Starts (or stops) a private PostgreSQL cluster on a loopback port for the
# Postgres variants of the tests. Usage:
#   eval "$(scripts/pgcluster.sh start DIR [PORT])"   # exports PRAXIS_TEST_POSTGRES
#   scripts/pgcluster.sh stop DIR
# initdb refuses to run as root, so the cluster belongs to the postgres user.
set -euo pipefail
cmd=${1:?start|stop}
dir=${2:?data directory}
port=${3:-55432}

find_bin() {
  for d in /usr/lib/postgresql/*/bin; do
    [ -x "$d/$1" ] && { echo "$d/$1"; return 0; }
  done
  command -v "$1" || return 1
}

ensure_installed() {
  if ! find_bin initdb >/dev/null 2>&1; then
    echo "installing PostgreSQL from Debian packages" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) >&2
  fi
}

as_pg() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

case "$cmd" in
start)
  ensure_installed
  initdb=$(find_bin initdb); pg_ctl=$(find_bin pg_ctl)
  mkdir -p "$dir"
  [ "$(id -u)" = 0 ] && chown postgres "$dir"
  if [ ! -f "$dir/PG_VERSION" ]; then
    as_pg "$initdb" -D "$dir" -U praxis --auth=trust -E UTF8 >/dev/null
  fi
  as_pg "$pg_ctl" -D "$dir" -w -l "$dir/server.log" \
    -o "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories=$dir -c fsync=off -c max_connections=300 -c shared_buffers=128MB" start >&2
  echo "export PRAXIS_TEST_POSTGRES='postgres://praxis@127.0.0.1:$port/postgres?sslmode=disable'"
  ;;
stop)
  pg_ctl=$(find_bin pg_ctl)
  [ -f "$dir/postmaster.pid" ] && as_pg "$pg_ctl" -D "$dir" -m fast stop >&2 || true
  ;;
*)
  echo "usage: $0 start|stop DIR [PORT]" >&2; exit 2 ;;
esac
