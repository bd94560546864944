#!/usr/bin/env bash
# API fuzzer: Schemathesis against the service's own OpenAPI document (GET /openapi.json).
#
#   scripts/fuzz-api.sh            what CI runs (scripts/test): a 60 s budget, a fixed seed
#   scripts/fuzz-api.sh --explore  a long run: a new seed, no time budget, 500 examples per
#                                  operation (each still overridable, see below)
#   scripts/fuzz-api.sh --help     this text
#
# Installs Schemathesis (pinned) into a venv in the user's cache directory (reused by every
# clone; FUZZ_VENV overrides), takes the service's debug build from the test build (`cargo
# test --workspace --no-default-features --no-run`: the same features as scripts/test, so
# nothing builds twice), starts it on its own database, RPC queue, events exchange, Redis
# prefix and free port, waits for /health/ready, runs every phase and every Schemathesis
# check that applies with the API key, and exits non-zero on any finding. Schemathesis
# shares a budget out over the operations and phases, so every operation is fuzzed in every
# phase (given the 15 s or so the examples and coverage phases take first). The service it
# started is stopped, and its database, queues and exchange removed, on exit.
#
# Needs: Rust (cargo) and the local PostgreSQL, Redis and RabbitMQ; on Debian, Python 3 and
# its venv module are installed with apt-get when missing.
# Environment: FUZZ_MAX_TIME seconds per run (60; --explore: none), FUZZ_MAX_EXAMPLES per
# operation and cycle (40; --explore: 500), FUZZ_SEED (20261129; --explore: random),
# FUZZ_WORKERS (1: Python 3.11's ast module miscounts when two threads build trees at once,
# CPython gh-106905, and Hypothesis parses in each worker; a run with 2 failed on it), FUZZ_PORT
# (a free one), FUZZ_VENV, PG_ADMIN_URL
# (postgres://postgres@127.0.0.1:5432/postgres), AMQP_URL (amqp://guest:guest@127.0.0.1:5672/%2f).
set -euo pipefail
explore=""
case "${1:-}" in
-h | --help)
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
    exit 0
    ;;
--explore) explore=1 ;;
"") ;;
*)
    echo "fuzz-api: unknown argument '$1' (see --help)" >&2
    exit 2
    ;;
esac

SCHEMATHESIS_VERSION=4.32.5
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

if [[ -n "$explore" ]]; then
    max_time="${FUZZ_MAX_TIME:-}"
    max_examples="${FUZZ_MAX_EXAMPLES:-500}"
    seed="${FUZZ_SEED:-}"
else
    max_time="${FUZZ_MAX_TIME-60}"
    max_examples="${FUZZ_MAX_EXAMPLES:-40}"
    seed="${FUZZ_SEED-20261129}"
fi
pg_admin="${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
amqp_url="${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"
target="${CARGO_TARGET_DIR:-target}"
[[ "$target" == /* ]] || target="$root/$target"
run_id="fuzz_$(date +%s)_$$"
db_name="us_${run_id}"
db_url="${pg_admin%/*}/${db_name}"
export FUZZ_API_KEY="fuzz-key-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
export FUZZ_SECRET="fuzz-secret-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
venv="${FUZZ_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/user-service/schemathesis-$SCHEMATHESIS_VERSION}"
report_dir="$target/fuzz-report"
log="$target/fuzz-service.log"
service_pid=""

say() { printf 'fuzz-api: %s\n' "$*" >&2; }

cleanup() {
    local rc=$?
    if [[ -n "$service_pid" ]] && kill -0 "$service_pid" 2>/dev/null; then
        kill -TERM "$service_pid" 2>/dev/null || true
        for _ in $(seq 1 100); do
            kill -0 "$service_pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$service_pid" 2>/dev/null || true
        wait "$service_pid" 2>/dev/null || true
    fi
    "$venv/bin/python" - "$amqp_url" "$run_id" <<'PY' 2>/dev/null || say "could not remove the broker objects of $run_id"
import sys, pika
with pika.BlockingConnection(pika.URLParameters(sys.argv[1])) as c:
    ch, run = c.channel(), sys.argv[2]
    for queue in (f"{run}.rpc", f"{run}.rpc.dlq"):
        ch.queue_delete(queue)
    ch.exchange_delete(f"{run}.events")
PY
    "$venv/bin/python" - "$pg_admin" "$db_name" <<'PY' 2>/dev/null || say "could not drop database $db_name"
import sys, psycopg
with psycopg.connect(sys.argv[1], autocommit=True) as c:
    c.execute(f'DROP DATABASE IF EXISTS "{sys.argv[2]}" WITH (FORCE)')
PY
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# 1. Python with venv (Debian: installed with apt-get when missing), then Schemathesis (with
#    psycopg and pika, to drop the database and the broker objects), pinned, in a venv.
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    say "installing python3 and python3-venv with apt-get"
    sudo_cmd=()
    [[ "$(id -u)" -ne 0 ]] && sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq python3 python3-venv >/dev/null
fi
if ! "$venv/bin/st" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION" \
    || ! "$venv/bin/python" -c 'import psycopg, pika' 2>/dev/null; then
    say "installing schemathesis $SCHEMATHESIS_VERSION into $venv"
    mkdir -p "$(dirname "$venv")"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
        "schemathesis==$SCHEMATHESIS_VERSION" "psycopg[binary]==3.3.9" "pika==1.3.2"
fi

# 2. The service binary, as the tests build it (a no-op after scripts/test's build).
say "building the service"
cargo test --quiet --workspace --no-default-features --no-run
binary="$target/debug/user-service"
[[ -n "${FUZZ_PORT:-}" ]] && port="$FUZZ_PORT" || port="$("$venv/bin/python" -c '
import socket
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    print(s.getsockname()[1])')"

# 3. Start it on its own database, queue, exchange, Redis prefix and port. The fuzzer's own
#    callers (its key, and the secret as `internal`) get an allowance they never reach (a 429
#    would hide what it tests); the limit on failed authentications keeps its default, as in
#    production: the fuzzer authenticates validly in every scheme (scripts/schemathesis.toml),
#    its auth probes repeat the same invalid credentials, and valid ones are never refused.
say "starting the service on 127.0.0.1:$port (database $db_name)"
env DATABASE_URL="$db_url" \
    HTTP_ADDR="127.0.0.1:$port" \
    INTERNAL_API_KEYS="fuzz=$FUZZ_API_KEY" \
    INTERNAL_SERVICE_SECRET="$FUZZ_SECRET" \
    CREDENTIAL_READERS=fuzz \
    AUDIT_READERS=fuzz \
    RATE_LIMITS="fuzz=1000000/60,default=1000000/60" \
    RPC_QUEUE="$run_id.rpc" \
    EVENTS_EXCHANGE="$run_id.events" \
    CACHE_PREFIX="$run_id" \
    LOG_FORMAT=json RUST_LOG="${RUST_LOG:-warn}" \
    "$binary" >"$log" 2>&1 &
service_pid=$!

deadline=$((SECONDS + 60))
ready() {
    "$venv/bin/python" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' \
        "http://127.0.0.1:$port/health/ready" >/dev/null 2>&1
}
until ready; do
    if ! kill -0 "$service_pid" 2>/dev/null; then
        say "the service exited; its log:"; tail -n 30 "$log" >&2; exit 1
    fi
    if ((SECONDS > deadline)); then
        say "not ready within 60 s; its log:"; tail -n 30 "$log" >&2; exit 1
    fi
    sleep 0.2
done

# 4. Fuzz: every phase (examples, coverage, fuzzing, stateful) and every check (enabled in
#    scripts/schemathesis.toml, with the few per-operation exceptions the contract makes),
#    within the budget (--max-time: Schemathesis gives each operation its share, fuzzing and
#    stateful testing repeat until it is spent), or each phase once to the end without one;
#    generated request keys made unique by scripts/schemathesis_hooks.py. Any finding fails
#    the run.
say "running schemathesis (${max_time:+a ${max_time} s budget, }${max_examples} examples per operation, seed ${seed:-random})"
started=$SECONDS
set +e
# From the target directory, so that Schemathesis keeps its cache (.schemathesis/) out of
# the work tree.
cd "$target"
SCHEMATHESIS_HOOKS="$root/scripts/schemathesis_hooks.py" \
"$venv/bin/st" --config-file "$root/scripts/schemathesis.toml" run \
    "http://127.0.0.1:$port/openapi.json" \
    --max-examples "$max_examples" \
    ${max_time:+--max-time "$max_time"} \
    --workers "${FUZZ_WORKERS:-1}" \
    --request-timeout 10 \
    ${seed:+--seed "$seed"} \
    --report junit --report-dir "$report_dir"
status=$?
set -e
say "schemathesis finished in $((SECONDS - started))s with status $status (report: $report_dir)"
# A 500 is already a finding; a panic or an internal error the answers hid is one too.
if grep -E '"message":"(internal error|database error)"|panicked' "$log" >/dev/null; then
    say "the service logged internal errors:"
    grep -E '"message":"(internal error|database error)"|panicked' "$log" | tail -n 20 >&2
    status=1
fi
exit "$status"
