#!/usr/bin/env bash
# A throw-away three-node RabbitMQ cluster for failover tests, beside the
# machine's own broker (rabbit@localhost, 127.0.0.1:5672), which it never
# touches. Nodes usc1..3@localhost, AMQP 127.0.0.1:5681..5683 (guest/guest),
# distribution 25681..25683; data, logs and cookie in $RABBITMQ_CLUSTER_DIR.
#
#   start        start the nodes (in parallel), form the cluster, wait for it;
#                keeps nodes that already run; prints the three AMQP URLs
#   stop         stop all nodes (SIGKILL after a grace), delete the data dir
#   urls         the AMQP URLs, comma-separated on one line
#   status       cluster_status of a node that runs
#   kill N       SIGKILL node N's beam.smp; returns once it is gone
#   restart N    start node N again; returns once it runs and is clustered
#   pause N      SIGSTOP node N          resume N   SIGCONT node N
#   leader Q     index of the node leading quorum queue Q (vhost /); waits
#                until that node runs and is not paused (re-election)
#   port N       node N's AMQP port
#
# stdout carries only the values asked for; progress and errors go to stderr.
# Nodes use net_ticktime = 10 (default 60), so a paused node is declared down
# after ~10 s, and cluster_partition_handling = autoheal, so a node resumed
# after that rejoins by itself. Needs root (or the rabbitmq package's files
# readable) and the machine's epmd on 127.0.0.1:4369 (started if missing).
#
# Env: RABBITMQ_CLUSTER_DIR (/tmp/user-service-rabbitmq-cluster),
#      CLUSTER_WAIT_SECS (90, every wait), CLUSTER_STOP_GRACE_SECS (10).
set -euo pipefail
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" || $# -eq 0 ]]; then
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
    exit 0
fi

PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
export PATH

DIR="${RABBITMQ_CLUSTER_DIR:-/tmp/user-service-rabbitmq-cluster}"
WAIT="${CLUSTER_WAIT_SECS:-90}"
GRACE="${CLUSTER_STOP_GRACE_SECS:-10}"
# The /usr/sbin wrappers switch to the rabbitmq user and its cookie; these
# scripts run as the caller and take the cookie from $HOME.
BIN=/usr/lib/rabbitmq/bin
TICK=10

log() { echo "rabbitmq-cluster: $*" >&2; }
die() {
    echo "rabbitmq-cluster: ERROR: $*" >&2
    exit 1
}
name() { echo "usc$1@localhost"; }
port() { echo $((5680 + $1)); }
check_n() { [[ "${1:-}" =~ ^[123]$ ]] || die "node index must be 1, 2 or 3, got '${1:-}'"; }

# Environment shared by servers and CLI. An empty RABBITMQ_CONF_ENV_FILE
# would fall back to /etc/rabbitmq/rabbitmq-env.conf (pins rabbit@localhost),
# so it points at an empty file. The CLI gets the nodes' net_ticktime: with
# the default 60 it ticks every 15 s and the nodes drop it after ~10 s.
ENV=(env -u ERL_FLAGS -u ERL_AFLAGS -u ERL_ZFLAGS -u RABBITMQ_NODENAME
    HOME="$DIR/home" RABBITMQ_CONF_ENV_FILE="$DIR/empty-env.conf" ERL_EPMD_ADDRESS=127.0.0.1
    RABBITMQ_CTL_ERL_ARGS="-kernel net_ticktime $TICK -kernel inet_dist_use_interface {127,0,0,1}")
# ctl N ARGS...: rabbitmqctl against node N; `timeout` because connecting to
# a SIGSTOPped node hangs.
ctl() {
    local n=$1
    shift
    "${ENV[@]}" timeout 60 "$BIN/rabbitmqctl" -n "$(name "$n")" "$@" </dev/null
}

# pid N: node N's beam.smp pid, if it runs. The pid file may be stale, so the
# process must be a beam.smp whose environment names this node; without a
# pid file /proc is scanned.
is_node_pid() {
    [[ -n "$1" && -r "/proc/$1/environ" ]] &&
        [[ "$(cat "/proc/$1/comm" 2>/dev/null)" == beam.smp ]] &&
        tr '\0' '\n' <"/proc/$1/environ" 2>/dev/null | grep -qx "RABBITMQ_NODENAME=$(name "$2")"
}
pid() {
    local p=""
    [[ -r "$DIR/usc$1/pid" ]] && p="$(tr -dc 0-9 <"$DIR/usc$1/pid")"
    if is_node_pid "$p" "$1"; then echo "$p" && return 0; fi
    for p in $(grep -lx beam.smp /proc/[0-9]*/comm 2>/dev/null | cut -d/ -f3); do
        if is_node_pid "$p" "$1"; then echo "$p" && return 0; fi
    done
    return 1
}
paused() { [[ "$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null)" == T ]]; }
healthy() { local p; p="$(pid "$1")" && ! paused "$p"; }
# A node to ask: the first that runs and is not paused.
any_node() {
    local n
    for n in 1 2 3; do healthy "$n" && echo "$n" && return 0; done
    die "no cluster node runs (or all are paused); run: $0 start"
}

port_open() { timeout 3 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$0"' "$1" >/dev/null 2>&1; }
fail_node() {
    local f
    for f in "$DIR/usc$1/server.out" "$DIR/usc$1/log/$(name "$1").log"; do
        [[ -s "$f" ]] && { log "tail of $f:"; tail -n 25 "$f" | sed 's/^/    /' >&2; }
    done
    die "node $(name "$1"): $2"
}

setup() {
    mkdir -p "$DIR/home"
    : >"$DIR/empty-env.conf"
    echo '[].' >"$DIR/enabled_plugins"
    if [[ ! -s "$DIR/home/.erlang.cookie" ]]; then
        od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >"$DIR/home/.erlang.cookie"
        chmod 400 "$DIR/home/.erlang.cookie"
    fi
    local n
    for n in 1 2 3; do
        mkdir -p "$DIR/usc$n/log" "$DIR/usc$n/mnesia"
        # Own config file: /etc/rabbitmq/rabbitmq.conf pins the listener to 5672.
        cat >"$DIR/usc$n/rabbitmq.conf" <<EOF
listeners.tcp.1 = 127.0.0.1:$(port "$n")
loopback_users.guest = true
net_ticktime = $TICK
cluster_partition_handling = autoheal
log.console = false
log.file.level = info
EOF
    done
}

launch() {
    local n=$1 d="$DIR/usc$1"
    port_open "$(port "$n")" && die "port $(port "$n") is taken by another program; node $(name "$n") cannot start"
    log "starting $(name "$n")"
    rm -f "$d/pid"
    # setsid: the caller's process group (Ctrl-C, a test harness) must not
    # reach the nodes; the rabbitmq-server script stays beam.smp's parent.
    (cd "$d" && exec setsid "${ENV[@]}" \
        RABBITMQ_NODENAME="$(name "$n")" RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
        RABBITMQ_NODE_PORT="$(port "$n")" RABBITMQ_DIST_PORT=$((25680 + n)) \
        RABBITMQ_MNESIA_BASE="$d/mnesia" RABBITMQ_LOG_BASE="$d/log" RABBITMQ_PID_FILE="$d/pid" \
        RABBITMQ_CONFIG_FILE="$d/rabbitmq.conf" RABBITMQ_ADVANCED_CONFIG_FILE="$d/advanced.config" \
        RABBITMQ_ENABLED_PLUGINS_FILE="$DIR/enabled_plugins" \
        RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="+S 1:1 -kernel inet_dist_use_interface {127,0,0,1}" \
        "$BIN/rabbitmq-server") </dev/null >>"$d/server.out" 2>&1 &
}

# wait_up N DEADLINE: node N runs its rabbit app (AMQP port open, then
# await_startup for the rest of the boot).
wait_up() {
    local n=$1 deadline=$2 gone=0
    until port_open "$(port "$n")"; do
        if pid "$n" >/dev/null; then gone=0; else gone=$((gone + 1)); fi
        ((gone < 5)) || fail_node "$n" "exited while starting"
        ((SECONDS < deadline)) || fail_node "$n" "AMQP port $(port "$n") not open after ${WAIT}s"
        sleep 1
    done
    ctl "$n" -q await_startup --timeout $((deadline > SECONDS ? deadline - SECONDS : 1)) >/dev/null 2>&1 ||
        fail_node "$n" "await_startup failed within ${WAIT}s"
}
# running N: the running_nodes node N reports (one per line).
running() {
    ctl "$1" -q cluster_status --formatter json 2>/dev/null |
        grep -o '"running_nodes":\[[^]]*\]' | grep -o 'usc[123]@localhost' || true
}
# wait_clustered N MIN DEADLINE: node N sees at least MIN running members.
wait_clustered() {
    until (($(running "$1" | wc -l) >= $2)); do
        ((SECONDS < $3)) || fail_node "$1" "not clustered (fewer than $2 running members) after ${WAIT}s"
        sleep 1
    done
}

cmd_start() {
    local n deadline=$((SECONDS + WAIT)) t0=$SECONDS
    setup
    for n in 1 2 3; do pid "$n" >/dev/null || launch "$n"; done
    for n in 1 2 3; do wait_up "$n" "$deadline"; done
    # Fresh nodes each form a cluster of one; join 2 and 3 to 1 (joins one at
    # a time, the slow start_apps in parallel). Restarted nodes rejoin alone.
    local members joined=()
    members="$(ctl 1 -q cluster_status --formatter json 2>/dev/null | grep -o '"disk_nodes":\[[^]]*\]')" ||
        fail_node 1 "cluster_status failed"
    for n in 2 3; do
        [[ "$members" == *"$(name "$n")"* ]] && continue
        log "joining $(name "$n") to $(name 1)"
        { ctl "$n" -q stop_app && ctl "$n" -q join_cluster "$(name 1)"; } >/dev/null 2>&1 ||
            fail_node "$n" "stop_app/join_cluster $(name 1) failed"
        joined+=("$n")
    done
    for n in "${joined[@]}"; do ctl "$n" -q start_app >/dev/null 2>&1 & done
    wait
    for n in "${joined[@]}"; do wait_up "$n" "$deadline"; done
    wait_clustered 1 3 "$deadline"
    log "cluster of 3 running ($((SECONDS - t0))s)"
    for n in 1 2 3; do echo "amqp://guest:guest@127.0.0.1:$(port "$n")/%2f"; done
}

cmd_stop() {
    local n p pids=() deadline=$((SECONDS + GRACE))
    for n in 1 2 3; do
        # SIGCONT first: a paused node cannot act on SIGTERM (graceful stop).
        if p="$(pid "$n")"; then
            kill -TERM "$p" && kill -CONT "$p" && pids+=("$p")
        fi
    done
    for p in "${pids[@]}"; do
        while [[ -e "/proc/$p" ]] && ((SECONDS < deadline)); do sleep 0.2; done
        [[ -e "/proc/$p" ]] && { log "pid $p still runs after ${GRACE}s; SIGKILL"; kill -KILL "$p" 2>/dev/null || true; }
    done
    for p in "${pids[@]}"; do while [[ -e "/proc/$p" ]]; do sleep 0.1; done; done
    rm -rf "$DIR"
}

cmd_kill() {
    local p deadline=$((SECONDS + WAIT))
    p="$(pid "$1")" || { log "$(name "$1") is not running"; return 0; }
    kill -KILL "$p"
    # /proc/PID lasts until the rabbitmq-server script (the parent) reaps it.
    while [[ -e "/proc/$p" ]]; do
        ((SECONDS < deadline)) || die "pid $p of $(name "$1") still present after SIGKILL"
        sleep 0.05
    done
}

cmd_restart() {
    local deadline=$((SECONDS + WAIT))
    [[ -d "$DIR/usc$1/mnesia" ]] || die "no data for $(name "$1") in $DIR; run: $0 start"
    pid "$1" >/dev/null || launch "$1"
    wait_up "$1" "$deadline"
    wait_clustered "$1" 2 "$deadline"
}

cmd_leader() {
    local q=$1 n l deadline=$((SECONDS + WAIT))
    while :; do
        n="$(any_node)"
        l="$(ctl "$n" -q list_queues -p / name type leader --no-table-headers 2>/dev/null |
            awk -F'\t' -v q="$q" '$1 == q && $2 == "quorum" { print $3 }')" || true
        # A killed or paused leader is stale; wait for the re-election.
        if [[ "$l" =~ ^usc([123])@localhost$ ]] && healthy "${BASH_REMATCH[1]}"; then
            echo "${BASH_REMATCH[1]}"
            return 0
        fi
        ((SECONDS < deadline)) ||
            die "no running, unpaused leader for quorum queue '$q' in vhost / after ${WAIT}s (last seen: '${l:-none}', asked $(name "$n"))"
        sleep 0.5
    done
}

cmd=$1
shift
case "$cmd" in
start) cmd_start ;;
stop) cmd_stop ;;
urls) echo "amqp://guest:guest@127.0.0.1:5681/%2f,amqp://guest:guest@127.0.0.1:5682/%2f,amqp://guest:guest@127.0.0.1:5683/%2f" ;;
status) ctl "$(any_node)" cluster_status ;;
port) check_n "${1:-}" && port "$1" ;;
kill | restart) check_n "${1:-}" && "cmd_$cmd" "$1" ;;
pause | resume)
    check_n "${1:-}"
    p="$(pid "$1")" || die "$(name "$1") is not running"
    if [[ "$cmd" == pause ]]; then kill -STOP "$p"; else kill -CONT "$p"; fi
    ;;
leader)
    [[ -n "${1:-}" ]] || die "usage: $0 leader QUEUE"
    cmd_leader "$1"
    ;;
*) die "unknown command '$cmd' (see $0 --help)" ;;
esac
