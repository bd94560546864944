#!/usr/bin/env bash
# A throw-away three-node RabbitMQ cluster for failover tests, beside the
# machine's own broker (rabbit@localhost, 127.0.0.1:5672), which it never
# touches. Nodes usc1..3@localhost, AMQP 127.0.0.1:5681..5683 (guest/guest),
# distribution 25681..25683; data, logs and cookie in $RABBITMQ_CLUSTER_DIR.
#
#   start      start the nodes in parallel, form the cluster, wait for it; keeps
#              (and resumes) nodes that run, unless their data dir is gone;
#              prints the AMQP URLs, one a line
#   stop       stop all nodes (SIGKILL after a grace), delete the data dir
#   urls       the AMQP URLs, comma-separated    port N   node N's AMQP port
#   status     each node's process state, then cluster_status
#   kill N     SIGKILL node N's beam.smp; returns once it is gone
#   restart N  start node N again; returns once it runs and is clustered
#   pause N    SIGSTOP node N
#   resume N   SIGCONT node N; one paused past net_ticktime is restarted, and
#              this returns once it runs and is clustered
#   leader Q   index of the node leading quorum queue Q (vhost /); waits for a
#              re-election while that node is killed or paused
#   synced Q.. waits until every member of each quorum queue Q runs as leader or
#              follower and has committed what the leader had when it began: a
#              restarted member catches up on the log before the queue can lose
#              another member (losing one before that is losing two)
#
# Only asked-for values go to stdout. net_ticktime is 1 s (CLUSTER_NET_TICKTIME):
# a paused node is dropped by the others within 1-1.25 s, so a quorum queue it
# led takes messages again ~1.5-2 s after the pause (3 s: ~6 s; RabbitMQ's
# default, 60 s: over a minute), and `resume` of a node paused for longer
# restarts it so that it rejoins (see cmd_resume).
# Env: RABBITMQ_CLUSTER_DIR (/tmp/user-service-rabbitmq-cluster),
# CLUSTER_WAIT_SECS (90, every wait), CLUSTER_STOP_GRACE_SECS (10).
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
TICKTIME="${CLUSTER_NET_TICKTIME:-1}"
# Not the /usr/sbin wrappers: they switch to the rabbitmq user and its cookie.
BIN=/usr/lib/rabbitmq/bin

log() { echo "rabbitmq-cluster: $*" >&2; }
die() { echo "rabbitmq-cluster: ERROR: $*" >&2 && exit 1; }
name() { echo "usc$1@localhost"; }
port() { echo $((5680 + $1)); }
check_n() { [[ "${1:-}" =~ ^[123]$ ]] || die "node index must be 1, 2 or 3, got '${1:-}'"; }

# For servers and CLI alike; HOME holds the cookie. An empty
# RABBITMQ_CONF_ENV_FILE falls back to /etc/rabbitmq/rabbitmq-env.conf (which
# pins rabbit@localhost), so it names an empty file.
ENV=(env -u ERL_FLAGS -u ERL_AFLAGS -u ERL_ZFLAGS -u RABBITMQ_NODENAME
    HOME="$DIR/home" RABBITMQ_CONF_ENV_FILE="$DIR/empty-env.conf" ERL_EPMD_ADDRESS=127.0.0.1
    RABBITMQ_CTL_ERL_ARGS="-kernel net_ticktime $TICKTIME -kernel inet_dist_use_interface {127,0,0,1}")
# rabbitmqctl against node N; `timeout` (CTL_TIMEOUT, 60 s): calls reaching a paused node hang.
ctl() { "${ENV[@]}" timeout "${CTL_TIMEOUT:-60}" "$BIN/rabbitmqctl" -n "$(name "$1")" "${@:2}" </dev/null; }
# erl N EXPR: EXPR evaluated on node N, printed as `{ok, Value}`. erl_call (erlang-base) boots
# no Erlang VM, where each rabbitmqctl call boots one (2-3 s on a loaded machine: most of a
# restart's or a sync's wait was the CLI's). Bounded (ERL_TIMEOUT, 10 s): a paused node never
# answers.
erl() { "${ENV[@]}" erl_call -sname "$(name "$1")" -timeout "${ERL_TIMEOUT:-10}" -e <<<"$2" 2>/dev/null; }

# pid N: a beam.smp whose environment names node N (the pid file may be
# stale or gone; then /proc is scanned).
is_node_pid() {
    [[ -n "$1" && "$(cat "/proc/$1/comm" 2>/dev/null)" == beam.smp ]] &&
        tr '\0' '\n' 2>/dev/null <"/proc/$1/environ" | grep -qx "RABBITMQ_NODENAME=$(name "$2")"
}
pid() {
    local p=""
    [[ -r "$DIR/usc$1/pid" ]] && p="$(tr -dc 0-9 <"$DIR/usc$1/pid")"
    for p in $p $(grep -lx beam.smp /proc/[0-9]*/comm 2>/dev/null | cut -d/ -f3); do
        is_node_pid "$p" "$1" && echo "$p" && return 0
    done
    return 1
}
paused() { [[ "$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null)" == T ]]; }
healthy() { local p; p="$(pid "$1")" && ! paused "$p"; }
any_node() {
    for n in 1 2 3; do healthy "$n" && echo "$n" && return 0; done
    die "no cluster node runs unpaused; run: $0 start"
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
    local n
    mkdir -p "$DIR/home"
    : >"$DIR/empty-env.conf"
    echo '[].' >"$DIR/enabled_plugins"
    if [[ ! -s "$DIR/home/.erlang.cookie" ]]; then
        od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >"$DIR/home/.erlang.cookie"
        chmod 400 "$DIR/home/.erlang.cookie"
    fi
    for n in 1 2 3; do # own config: /etc/rabbitmq/rabbitmq.conf pins port 5672
        mkdir -p "$DIR/usc$n/log" "$DIR/usc$n/mnesia"
        # Fresh nodes find each other as they boot (peer discovery takes a lock, so
        # that one of them forms the cluster and the others join it).
        printf '%s\n' "listeners.tcp.1 = 127.0.0.1:$(port "$n")" "loopback_users.guest = true" \
            "cluster_partition_handling = ignore" "net_ticktime = $TICKTIME" \
            "log.console = false" "cluster_formation.peer_discovery_backend = classic_config" \
            "cluster_formation.classic_config.nodes.1 = $(name 1)" \
            "cluster_formation.classic_config.nodes.2 = $(name 2)" \
            "cluster_formation.classic_config.nodes.3 = $(name 3)" >"$DIR/usc$n/rabbitmq.conf"
    done
}

launch() {
    local n=$1 d="$DIR/usc$1"
    port_open "$(port "$n")" && die "port $(port "$n") is taken by another program"
    log "starting $(name "$n")"
    rm -f "$d/pid"
    # setsid: signals to the caller's process group (Ctrl-C, a test harness)
    # must not reach the nodes. rabbitmq-server stays beam.smp's parent.
    (cd "$d" && exec setsid "${ENV[@]}" \
        RABBITMQ_NODENAME="$(name "$n")" RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
        RABBITMQ_NODE_PORT="$(port "$n")" RABBITMQ_DIST_PORT=$((25680 + n)) \
        RABBITMQ_MNESIA_BASE="$d/mnesia" RABBITMQ_LOG_BASE="$d/log" RABBITMQ_PID_FILE="$d/pid" \
        RABBITMQ_CONFIG_FILE="$d/rabbitmq.conf" RABBITMQ_ADVANCED_CONFIG_FILE="$d/advanced.config" \
        RABBITMQ_ENABLED_PLUGINS_FILE="$DIR/enabled_plugins" \
        RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="+S 1:1 -kernel inet_dist_use_interface {127,0,0,1}" \
        "$BIN/rabbitmq-server") </dev/null >>"$d/server.out" 2>&1 &
}

# wait_up N DEADLINE: the AMQP port opens late in the boot and is free to
# poll; the node then confirms that it has booted.
wait_up() {
    local n=$1 deadline=$2 gone=0
    until port_open "$(port "$n")"; do
        if pid "$n" >/dev/null; then gone=0; else gone=$((gone + 1)); fi
        ((gone < 10)) || fail_node "$n" "exited while starting"
        ((SECONDS < deadline)) || fail_node "$n" "AMQP port $(port "$n") not open after ${WAIT}s"
        sleep 0.3
    done
    until [[ "$(erl "$n" 'rabbit:is_booted().')" == "{ok, true}" ]]; do
        ((SECONDS < deadline)) || fail_node "$n" "not booted after ${WAIT}s"
        sleep 0.2
    done
}
# members N all|running, from node N's own database (cluster_status would ask
# the other nodes too and hang on a paused one).
members() { erl "$1" "rabbit_mnesia:cluster_nodes($2)." | grep -o 'usc[123]@localhost' || true; }
wait_clustered() { # N MIN DEADLINE: node N sees at least MIN running members
    until (($(members "$1" running | wc -l) >= $2)); do
        ((SECONDS < $3)) || fail_node "$1" "fewer than $2 running cluster members after ${WAIT}s"
        sleep 0.5
    done
}

cmd_start() {
    local n p all deadline=$((SECONDS + WAIT)) t0=$SECONDS jobs=() joined=()
    # Nodes running without this directory's cookie (their data dir deleted under them)
    # answer AMQP but refuse rabbitmqctl: they cannot be kept.
    if [[ ! -s "$DIR/home/.erlang.cookie" ]]; then
        for n in 1 2 3; do
            pid "$n" >/dev/null || continue
            log "$(name "$n") runs without its data directory; killing it"
            cmd_kill "$n"
        done
    fi
    setup
    for n in 1 2 3; do # check every port before starting anything
        pid "$n" >/dev/null || ! port_open "$(port "$n")" || die "port $(port "$n") is taken by another program"
    done
    for n in 1 2 3; do
        if p="$(pid "$n")"; then kill -CONT "$p"; else launch "$n"; fi
    done
    for n in 1 2 3; do wait_up "$n" "$deadline"; done
    # Fresh nodes form the cluster as they boot (peer discovery; beside a loaded
    # machine's tests that took 25 s where joining them afterwards took 47-55 s). A
    # node that is still a cluster of its own is joined to 1 here, the joins one at
    # a time, the slow start_apps in parallel. Restarted nodes rejoin by themselves.
    all="$(members 1 all)"
    for n in 2 3; do
        grep -qx "$(name "$n")" <<<"$all" && continue
        log "joining $(name "$n") to $(name 1)"
        { ctl "$n" -q stop_app && ctl "$n" -q join_cluster "$(name 1)"; } >/dev/null 2>&1 ||
            fail_node "$n" "stop_app/join_cluster $(name 1) failed"
        joined+=("$n")
    done
    for n in "${joined[@]}"; do
        ctl "$n" -q start_app >/dev/null 2>&1 &
        jobs+=($!)
    done
    for p in "${jobs[@]}"; do wait "$p" || true; done # not a bare `wait`: the servers are children too
    for n in "${joined[@]}"; do wait_up "$n" "$deadline"; done
    wait_clustered 1 3 "$deadline"
    log "cluster of 3 running ($((SECONDS - t0))s)"
    for n in 1 2 3; do echo "amqp://guest:guest@127.0.0.1:$(port "$n")/%2f"; done
}

cmd_stop() {
    local n p pids=() deadline=$((SECONDS + GRACE))
    for n in 1 2 3; do # SIGCONT too: a paused node cannot act on SIGTERM
        if p="$(pid "$n")"; then kill -TERM "$p" && kill -CONT "$p" && pids+=("$p"); fi
    done
    for p in "${pids[@]}"; do
        while [[ -e "/proc/$p" ]] && ((SECONDS < deadline)); do sleep 0.2; done
        [[ ! -e "/proc/$p" ]] || { log "pid $p still runs after ${GRACE}s; SIGKILL" && kill -KILL "$p" 2>/dev/null || true; }
        while [[ -e "/proc/$p" ]]; do sleep 0.1; done
    done
    rm -rf "$DIR"
}

cmd_kill() {
    local p deadline=$((SECONDS + WAIT))
    p="$(pid "$1")" || { log "$(name "$1") is not running" && return 0; }
    kill -KILL "$p"
    while [[ -e "/proc/$p" ]]; do # until its parent, rabbitmq-server, reaps it
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

# Answered from the asked node's own state (list_queues would also ask a
# paused node and hang): Ra's leaderboard, else the queue record. The name is
# passed as a byte list so that no quoting can break the Erlang expression.
cmd_leader() {
    local n l="" deadline=$((SECONDS + WAIT)) bytes expr
    bytes="$(printf '%s' "$1" | od -An -tu1 -v | tr -s ' \n' ',' | sed 's/^,//; s/,$//')"
    expr="case rabbit_amqqueue:lookup(rabbit_misc:r(<<\"/\">>, queue, list_to_binary([$bytes]))) of
      {ok, Q} -> case amqqueue:get_pid(Q) of {Ra, L0} -> case ra_leaderboard:lookup_leader(Ra) of
      {_, L} -> L; _ -> L0 end; _ -> not_quorum end; _ -> not_found end."
    while :; do
        n="$(any_node)"
        l="$(erl "$n" "$expr")" || l=""
        [[ "$l" != *not_found* && "$l" != *not_quorum* ]] || die "no quorum queue '$1' in vhost / ($l)"
        if [[ "$l" =~ usc([123])@localhost ]] && healthy "${BASH_REMATCH[1]}"; then
            echo "${BASH_REMATCH[1]}"
            return 0
        fi
        ((SECONDS < deadline)) ||
            die "no running, unpaused leader for quorum queue '$1' after ${WAIT}s (last answer: '${l:-none}' from $(name "$n"))"
        sleep 0.2
    done
}

# The expression's answer: for each queue, the lowest and highest commit index
# among its members, or `behind` while one is down, recovering or a candidate.
cmd_synced() {
    local q bytes calls="" answer i ok deadline=$((SECONDS + WAIT)) targets=() found=()
    for q in "$@"; do
        bytes="$(printf '%s' "$q" | od -An -tu1 -v | tr -s ' \n' ',' | sed 's/^,//; s/,$//')"
        calls+="${calls:+, }F([$bytes])"
    done
    local expr="F = fun(Name) -> S = rabbit_quorum_queue:status(<<\"/\">>, list_to_binary(Name)),
          C = [proplists:get_value(<<\"Commit Index\">>, M) || M <- S,
               lists:member(proplists:get_value(<<\"Raft State\">>, M), [leader, follower])],
          case length(S) >= 3 andalso length(C) =:= length(S) of
            true -> {lists:min(C), lists:max(C)}; false -> behind end
          end, [${calls}]."
    while :; do
        answer="$(erl "$(any_node)" "$expr")" || answer=""
        mapfile -t found < <(grep -oE '\{[0-9]+, ?[0-9]+\}|behind' <<<"$answer")
        ok=1
        for ((i = 0; i < $#; i++)); do
            if [[ "${found[$i]:-}" =~ ^\{([0-9]+),\ ?([0-9]+)\}$ ]]; then
                [[ -n "${targets[$i]:-}" ]] || targets[$i]=${BASH_REMATCH[2]}
                ((BASH_REMATCH[1] >= targets[$i])) || ok=0
            else
                ok=0
            fi
        done
        ((ok)) && return 0
        ((SECONDS < deadline)) ||
            die "quorum queues '$*' not in sync after ${WAIT}s (last answer: '$(tr '\n' ' ' <<<"${answer:-none}")')"
        sleep 0.2
    done
}

# A node paused for longer than net_ticktime has been dropped by the others and
# comes back cut off (a partition). Neither automatic partition handling heals
# that well on one machine: autoheal may pick the resumed node, which still
# counts its dead clients, and restart the majority; pause_minority may never
# restart it. So the resumed node is restarted and rejoins, which is the
# documented recovery with `ignore`: the whole node, as `restart` does (12-15 s
# beside a loaded machine's tests), not only its app, whose stop_app and
# start_app took 25 s there and once hung for the CLI's whole timeout.
cmd_resume() {
    local since deadline=$((SECONDS + WAIT))
    signal CONT "$1"
    since=$(($(date +%s) - $(cat "$DIR/usc$1/paused-at" 2>/dev/null || date +%s)))
    rm -f "$DIR/usc$1/paused-at"
    ((since > TICKTIME)) || return 0
    log "$(name "$1") was paused ${since}s; restarting it to rejoin"
    cmd_kill "$1"
    launch "$1"
    wait_up "$1" "$deadline"
    wait_clustered "$1" 3 "$deadline"
}

cmd_status() {
    local n p state any_paused=""
    for n in 1 2 3; do
        p="$(pid "$n")" || { echo "$(name "$n"): down" && continue; }
        state=running && paused "$p" && state=paused && any_paused=1
        echo "$(name "$n"): pid $p, $state"
    done
    n="$(any_node)"
    # cluster_status would also ask the paused node and hang up to net_ticktime.
    if [[ -n "$any_paused" ]]; then
        echo "running nodes as $(name "$n") sees them: $(members "$n" running | tr "\n" " ")"
    else
        ctl "$n" cluster_status
    fi
}
signal() { local p && p="$(pid "$2")" && kill "-$1" "$p" || die "$(name "$2") is not running"; }

cmd=$1
shift
case "$cmd" in
port | kill | restart | pause | resume) check_n "${1:-}" ;;
leader | synced) [[ -n "${1:-}" ]] || die "usage: $0 $cmd QUEUE..." ;;
esac
# Plain statements, not `check && f`: set -e is off inside f there.
case "$cmd" in
start | stop | status) "cmd_$cmd" ;;
urls) echo "amqp://guest:guest@127.0.0.1:5681/%2f,amqp://guest:guest@127.0.0.1:5682/%2f,amqp://guest:guest@127.0.0.1:5683/%2f" ;;
port) port "$1" ;;
pause) signal STOP "$1" && date +%s >"$DIR/usc$1/paused-at" ;;
kill | restart | leader | resume) "cmd_$cmd" "$1" ;;
synced) cmd_synced "$@" ;;
*) die "unknown command '$cmd' (see $0 --help)" ;;
esac
