#!/usr/bin/env bash
# Make sure PostgreSQL, Redis and RabbitMQ are installed, running and
# answering on 127.0.0.1 (Debian, no systemd). Idempotent: when everything
# already runs it only checks and prints one status line per service.
#
#   PostgreSQL  127.0.0.1:5432  user postgres, trust auth (no password)
#   Redis       127.0.0.1:6379  no auth, no persistence
#   RabbitMQ    127.0.0.1:5672  guest/guest
#
# Also installs the build tools scripts/serve and scripts/test need next when
# they are missing: a C compiler (Rust links with cc) and make (the build of
# jemalloc, tikv-jemalloc-sys, runs it); a machine with only rustup has neither.
#
# Progress and command output go to stderr; stdout gets only the
# "<service>: <what was done>" lines (and "build tools: installed ..." when so).
#
# Env overrides: PG_WAIT_SECS (60), REDIS_WAIT_SECS (60), RABBIT_WAIT_SECS (120).
set -euo pipefail
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
    exit 0
fi

PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
export PATH

PG_HOST=127.0.0.1
PG_PORT=5432
REDIS_HOST=127.0.0.1
REDIS_PORT=6379
RABBIT_HOST=127.0.0.1
RABBIT_PORT=5672
PG_WAIT_SECS="${PG_WAIT_SECS:-60}"
REDIS_WAIT_SECS="${REDIS_WAIT_SECS:-60}"
RABBIT_WAIT_SECS="${RABBIT_WAIT_SECS:-120}"

log() { echo "ensure-services: $*" >&2; }
die() {
    echo "ensure-services: ERROR: $*" >&2
    exit 1
}

# ---------------------------------------------------------------- helpers

# Run a command as root: directly when root, via sudo when not root and sudo
# exists. Without either, checks still run (as far as possible) but anything
# that needs root (install, start, config change) fails with a clear message.
USE_SUDO=0
CAN_ROOT=1
if [[ "$(id -u)" -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
        USE_SUDO=1
    else
        CAN_ROOT=0
    fi
fi
as_root() {
    if ((USE_SUDO)); then
        sudo "$@"
    else
        "$@"
    fi
}
need_root() {
    ((CAN_ROOT)) || die "$* needs root (not root and no sudo)"
}

# Output of start commands goes to a log file (so daemons never keep our
# stdout/stderr pipes open); it is shown when something fails.
START_LOG="$(mktemp -t ensure-services.XXXXXX)"
trap 'rm -f "$START_LOG"' EXIT
show_start_log() {
    if [[ -s "$START_LOG" ]]; then
        log "output of the start command(s):"
        sed 's/^/    /' "$START_LOG" >&2
    fi
}

# port_open HOST PORT: does a TCP connect succeed?
# shellcheck disable=SC2016  # $0/$1 expand in the inner bash
port_open() {
    timeout 3 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$1" "$2" >/dev/null 2>&1
}

# wait_until SECONDS CMD...: poll CMD (1 s apart) until it succeeds or the
# deadline passes (returns 1 then).
wait_until() {
    local secs=$1
    shift
    local deadline=$((SECONDS + secs))
    until "$@"; do
        if ((SECONDS >= deadline)); then
            return 1
        fi
        sleep 1
    done
    return 0
}

# join ARGS...: "a, b, c"
join() {
    local IFS=','
    local s="$*"
    echo "${s//,/, }"
}

# ---------------------------------------------------------------- install

pg_installed() {
    command -v pg_ctlcluster >/dev/null 2>&1 &&
        command -v pg_isready >/dev/null 2>&1 &&
        command -v psql >/dev/null 2>&1 &&
        compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null
}
redis_installed() {
    command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1
}
rabbit_installed() {
    command -v rabbitmq-server >/dev/null 2>&1 &&
        command -v rabbitmqctl >/dev/null 2>&1 &&
        command -v rabbitmq-diagnostics >/dev/null 2>&1
}

PG_DID=()
REDIS_DID=()
RABBIT_DID=()

install_missing() {
    local pkgs=() tools=()
    command -v cc >/dev/null 2>&1 || tools+=(gcc libc6-dev)
    command -v make >/dev/null 2>&1 || tools+=(make)
    pkgs+=("${tools[@]}")
    if ! pg_installed; then
        pkgs+=(postgresql postgresql-client)
        PG_DID+=(installed)
    fi
    if ! redis_installed; then
        pkgs+=(redis-server redis-tools)
        REDIS_DID+=(installed)
    fi
    if ! rabbit_installed; then
        pkgs+=(rabbitmq-server)
        RABBIT_DID+=(installed)
    fi
    ((${#pkgs[@]})) || return 0

    command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install manually: ${pkgs[*]}"
    need_root "installing ${pkgs[*]}"
    log "installing: ${pkgs[*]}"
    # One apt-get update, one install (only reached when something is missing).
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2 ||
        die "apt-get update failed"
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends "${pkgs[@]}" >&2 ||
        die "apt-get install ${pkgs[*]} failed"

    pg_installed || die "postgres: still not installed after apt-get install"
    redis_installed || die "redis: still not installed after apt-get install"
    rabbit_installed || die "rabbitmq: still not installed after apt-get install"
    if ((${#tools[@]})); then
        if ! command -v cc >/dev/null 2>&1 || ! command -v make >/dev/null 2>&1; then
            die "build tools: cc or make still missing after apt-get install"
        fi
        echo "build tools: installed ${tools[*]}"
    fi
}

# ---------------------------------------------------------------- PostgreSQL

pg_ready() {
    timeout 10 pg_isready -q -h "$PG_HOST" -p "$PG_PORT" >/dev/null 2>&1
}

# Password-less login as postgres over TCP (ignores any ~/.pgpass / PGPASSWORD).
pg_trust_ok() {
    env -u PGPASSWORD -u PGSERVICE PGPASSFILE=/nonexistent/pgpass PGCONNECT_TIMEOUT=5 \
        timeout 15 psql -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres -w -X -q -tA \
        -c 'select 1' </dev/null >/dev/null 2>&1
}

# Prints "VERSION NAME" of the cluster to manage: the one configured for port
# 5432 if pg_lsclusters knows one, else the newest version's "main" cluster.
pg_cluster() {
    local c=""
    c="$(pg_lsclusters -h 2>/dev/null | awk -v p="$PG_PORT" '$3 == p { print $1, $2; exit }')" || true
    if [[ -z "$c" ]]; then
        local ver
        # shellcheck disable=SC2012  # version directory names only
        ver="$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n1)" || true
        [[ -n "$ver" ]] && c="$ver main"
    fi
    echo "$c"
}

pg_enable_trust() {
    local ver=$1 name=$2
    local hba="/etc/postgresql/$ver/$name/pg_hba.conf"
    need_root "postgres: switching $hba to trust auth"
    as_root test -f "$hba" || die "postgres: $hba not found; cannot enable trust auth"

    local backup
    backup="$hba.bak.$(date +%Y%m%d%H%M%S)"
    as_root cp -p "$hba" "$backup"
    log "postgres: password-less login failed; setting local and 127.0.0.1/::1 host lines in $hba to trust (backup: $backup)"

    # Replace the method (and any auth options after it) with "trust" on
    #   local <db> <user> <method>...
    #   host[ssl|nossl] <db> <user> 127.0.0.1/32|::1/128 <method>...
    as_root sed -i -E \
        -e 's/^([[:space:]]*local[[:space:]]+[^[:space:]]+[[:space:]]+[^[:space:]]+[[:space:]]+)[^[:space:]#].*$/\1trust/' \
        -e 's/^([[:space:]]*host(ssl|nossl)?[[:space:]]+[^[:space:]]+[[:space:]]+[^[:space:]]+[[:space:]]+(127\.0\.0\.1\/32|::1\/128)[[:space:]]+)[^[:space:]#].*$/\1trust/' \
        "$hba"

    # No IPv4 loopback line at all? Add one at the top (first match wins).
    if ! as_root grep -qE '^[[:space:]]*host(ssl|nossl)?[[:space:]]+[^[:space:]]+[[:space:]]+[^[:space:]]+[[:space:]]+127\.0\.0\.1/32[[:space:]]+trust' "$hba"; then
        as_root sed -i '1i host    all             all             127.0.0.1/32            trust' "$hba"
    fi

    as_root pg_ctlcluster --skip-systemctl-redirect "$ver" "$name" reload >>"$START_LOG" 2>&1 || {
        show_start_log
        die "postgres: pg_ctlcluster $ver $name reload failed"
    }
    wait_until 10 pg_trust_ok ||
        die "postgres: still cannot log in as postgres on $PG_HOST:$PG_PORT without a password after editing $hba (backup: $backup)"
}

ensure_postgres() {
    local cluster ver="" name=""
    cluster="$(pg_cluster)"
    if [[ -n "$cluster" ]]; then
        read -r ver name <<<"$cluster"
    fi

    if pg_ready; then
        ((${#PG_DID[@]})) || PG_DID+=("already running")
    else
        [[ -n "$ver" ]] ||
            die "postgres: no cluster found under /etc/postgresql (create one, e.g. pg_createcluster <version> main)"
        if as_root pg_ctlcluster "$ver" "$name" status >/dev/null 2>&1; then
            # Server process exists but is not accepting yet (starting up).
            log "postgres: cluster $ver/$name is running but not answering yet; waiting"
            PG_DID+=("was starting")
        else
            need_root "postgres: starting cluster $ver/$name"
            log "postgres: starting cluster $ver/$name"
            as_root pg_ctlcluster --skip-systemctl-redirect "$ver" "$name" start \
                </dev/null >>"$START_LOG" 2>&1 || {
                show_start_log
                die "postgres: pg_ctlcluster $ver $name start failed (see /var/log/postgresql/postgresql-$ver-$name.log)"
            }
            PG_DID+=(started)
        fi
        wait_until "$PG_WAIT_SECS" pg_ready || {
            show_start_log
            die "postgres: not accepting connections on $PG_HOST:$PG_PORT after ${PG_WAIT_SECS}s (check port/listen_addresses in /etc/postgresql/$ver/$name/postgresql.conf and /var/log/postgresql/postgresql-$ver-$name.log)"
        }
    fi

    if ! pg_trust_ok; then
        [[ -n "$ver" ]] || die "postgres: password-less login as postgres fails and no cluster config found to fix it"
        pg_enable_trust "$ver" "$name"
        PG_DID+=("pg_hba set to trust")
    fi

    echo "postgres: $(join "${PG_DID[@]}")"
}

# ---------------------------------------------------------------- Redis

redis_ping() {
    [[ "$(timeout 5 redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" ping 2>/dev/null)" == PONG ]]
}

ensure_redis() {
    if redis_ping; then
        ((${#REDIS_DID[@]})) || REDIS_DID+=("already running")
    elif port_open "$REDIS_HOST" "$REDIS_PORT"; then
        # Something listens but does not PONG (yet): e.g. still loading.
        log "redis: port $REDIS_PORT open but no PONG yet; waiting"
        wait_until "$REDIS_WAIT_SECS" redis_ping ||
            die "redis: $REDIS_HOST:$REDIS_PORT is open but does not answer PING with PONG after ${REDIS_WAIT_SECS}s (password set? another program on the port?)"
        REDIS_DID+=("was starting")
    else
        need_root "redis: starting redis-server"
        log "redis: starting"
        (cd / && as_root redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" \
            --save "" --appendonly no) </dev/null >>"$START_LOG" 2>&1 || {
            show_start_log
            die "redis: redis-server failed to start"
        }
        wait_until "$REDIS_WAIT_SECS" redis_ping || {
            show_start_log
            die "redis: not answering PING on $REDIS_HOST:$REDIS_PORT after ${REDIS_WAIT_SECS}s"
        }
        REDIS_DID+=(started)
    fi
    echo "redis: $(join "${REDIS_DID[@]}")"
}

# ---------------------------------------------------------------- RabbitMQ

# The Debian wrappers insist on root (or the rabbitmq user) for the CLI tools;
# without root only the AMQP port can be checked.
rabbit_node_up() {
    ((CAN_ROOT)) || return 0
    as_root rabbitmq-diagnostics -q ping --timeout 10 </dev/null >/dev/null 2>&1
}
rabbit_app_running() {
    ((CAN_ROOT)) || return 0
    as_root rabbitmq-diagnostics -q check_running --timeout 10 </dev/null >/dev/null 2>&1
}
rabbit_booting() {
    as_root rabbitmq-diagnostics -q is_booting --timeout 10 </dev/null 2>/dev/null | grep -q 'is booting'
}
rabbit_ready() {
    port_open "$RABBIT_HOST" "$RABBIT_PORT" && rabbit_node_up
}

rabbit_ensure_guest() {
    if ! ((CAN_ROOT)); then
        RABBIT_DID+=("guest user not checked (needs root)")
        return 0
    fi
    if ! as_root rabbitmqctl -q authenticate_user guest guest </dev/null >/dev/null 2>&1; then
        if as_root rabbitmqctl -q list_users </dev/null 2>/dev/null | awk '{ print $1 }' | grep -qx guest; then
            as_root rabbitmqctl -q change_password guest guest </dev/null >&2 ||
                die "rabbitmq: could not reset the guest password"
        else
            as_root rabbitmqctl -q add_user guest guest </dev/null >&2 ||
                die "rabbitmq: could not add user guest"
            as_root rabbitmqctl -q set_user_tags guest administrator </dev/null >&2 || true
        fi
        RABBIT_DID+=("guest/guest restored")
    fi
    if ! as_root rabbitmqctl -q list_user_permissions guest </dev/null 2>/dev/null | awk '$1 == "/"' | grep -q .; then
        as_root rabbitmqctl -q set_permissions -p / guest '.*' '.*' '.*' </dev/null >&2 ||
            die "rabbitmq: could not grant guest permissions on vhost /"
        RABBIT_DID+=("guest granted vhost /")
    fi
}

ensure_rabbitmq() {
    if rabbit_ready; then
        ((${#RABBIT_DID[@]})) || RABBIT_DID+=("already running")
    else
        need_root "rabbitmq: starting/waiting for the node"
        if rabbit_node_up; then
            # Erlang node is up but the listener is not: still booting, or the
            # app was stopped (rabbitmqctl stop_app). start_app is harmless
            # while booting, so it is only skipped when clearly booting.
            if rabbit_app_running || rabbit_booting; then
                log "rabbitmq: node is booting; waiting"
                RABBIT_DID+=("was starting")
            else
                log "rabbitmq: node up but app not running; rabbitmqctl start_app"
                as_root rabbitmqctl -q start_app </dev/null >>"$START_LOG" 2>&1 || {
                    show_start_log
                    die "rabbitmq: rabbitmqctl start_app failed"
                }
                RABBIT_DID+=("started app")
            fi
        else
            log "rabbitmq: starting"
            as_root rabbitmq-server -detached </dev/null >>"$START_LOG" 2>&1 || {
                show_start_log
                die "rabbitmq: rabbitmq-server -detached failed (see /var/log/rabbitmq/)"
            }
            RABBIT_DID+=(started)
        fi
        wait_until "$RABBIT_WAIT_SECS" rabbit_ready || {
            show_start_log
            die "rabbitmq: not answering on $RABBIT_HOST:$RABBIT_PORT after ${RABBIT_WAIT_SECS}s (see /var/log/rabbitmq/)"
        }
        as_root rabbitmqctl -q await_startup --timeout 60 </dev/null >>"$START_LOG" 2>&1 || {
            show_start_log
            die "rabbitmq: rabbitmqctl await_startup failed"
        }
    fi
    rabbit_ensure_guest
    echo "rabbitmq: $(join "${RABBIT_DID[@]}")"
}

# ---------------------------------------------------------------- main

install_missing
ensure_postgres
ensure_redis
ensure_rabbitmq
