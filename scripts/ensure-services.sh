#!/usr/bin/env bash
# Makes sure PostgreSQL, Redis and RabbitMQ are installed, running and answering on their
# default local ports, as user-service and its tests expect. Idempotent: a quick no-op when
# everything already runs. Debian/Ubuntu (apt-get); no systemd needed.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "ensure-services: not root and no sudo" >&2; exit 1
  fi
fi

APT_UPDATED=""
install() {
  if [ -z "$APT_UPDATED" ]; then
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    APT_UPDATED=1
  fi
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# wait_for NAME SECONDS COMMAND...: polls COMMAND until it succeeds or the deadline passes.
wait_for() {
  local name=$1 secs=$2; shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "ensure-services: $name did not answer within ${secs}s" >&2; exit 1
    fi
    sleep 0.5
  done
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# --- PostgreSQL -------------------------------------------------------------------------
pg_answers() { pg_isready -q -h 127.0.0.1 -p 5432; }
pg_trusts() { psql -h 127.0.0.1 -U postgres -d postgres -Atqc 'select 1' -w >/dev/null 2>&1; }

if ! command -v pg_ctlcluster >/dev/null 2>&1; then
  install postgresql postgresql-client
  pg_note="installed"
else
  pg_note="already installed"
fi
if pg_answers; then
  echo "postgres: running ($pg_note)"
else
  version=$(ls /etc/postgresql | sort -V | tail -n1)
  $SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  wait_for postgres 60 pg_answers
  echo "postgres: started ($pg_note)"
fi
if ! pg_trusts; then
  # A fresh install asks for passwords; the service's default URL has none: trust loopback.
  version=$(ls /etc/postgresql | sort -V | tail -n1)
  hba="/etc/postgresql/$version/main/pg_hba.conf"
  $SUDO sed -i -E \
    -e 's/^(local\s+all\s+all\s+)\S+$/\1trust/' \
    -e 's/^(local\s+all\s+postgres\s+)\S+$/\1trust/' \
    -e 's#^(host\s+all\s+all\s+127\.0\.0\.1/32\s+)\S+$#\1trust#' \
    -e 's#^(host\s+all\s+all\s+::1/128\s+)\S+$#\1trust#' "$hba"
  $SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main reload
  wait_for "postgres (trust auth)" 30 pg_trusts
  echo "postgres: loopback set to trust authentication"
fi

# --- Redis --------------------------------------------------------------------------------
redis_answers() { [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = "PONG" ]; }

if ! command -v redis-server >/dev/null 2>&1; then
  install redis-server redis-tools
  redis_note="installed"
else
  redis_note="already installed"
fi
if redis_answers; then
  echo "redis: running ($redis_note)"
else
  $SUDO redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null
  wait_for redis 60 redis_answers
  echo "redis: started ($redis_note)"
fi

# --- RabbitMQ -----------------------------------------------------------------------------
rabbit_answers() { port_open 5672 && $SUDO rabbitmq-diagnostics -q ping >/dev/null 2>&1; }

if ! command -v rabbitmq-server >/dev/null 2>&1; then
  install rabbitmq-server
  rabbit_note="installed"
else
  rabbit_note="already installed"
fi
if rabbit_answers; then
  echo "rabbitmq: running ($rabbit_note)"
else
  if ! $SUDO rabbitmq-diagnostics -q ping >/dev/null 2>&1; then
    $SUDO rabbitmq-server -detached >/dev/null 2>&1 || true
  else
    # The node runs but the app was stopped (rabbitmqctl stop_app).
    $SUDO rabbitmqctl -q start_app >/dev/null 2>&1 || true
  fi
  wait_for rabbitmq 120 rabbit_answers
  $SUDO rabbitmqctl -q await_startup >/dev/null 2>&1 || true
  echo "rabbitmq: started ($rabbit_note)"
fi
