#!/usr/bin/env bash
# Seeds users straight into the service's PostgreSQL database, for trying the service at
# scale: a million in seconds, where creates through the service would take minutes. Runs
# scripts/seed-users.sql (what a create writes, names from a fixed list, no events) in two
# parts side by side, then VACUUM (ANALYZE) users. The service must have started once on the
# database (it migrates it).
#
#   scripts/seed-users.sh [USERS]     USERS: how many (1000000)
#   scripts/seed-users.sh --help      this text
#
# Environment: DATABASE_URL (postgres://postgres@127.0.0.1:5432/user_service), as the
# service's. E-mails are user<i>.<tag>@bench.example.com with a tag of this run, so seedings
# add up.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
    exit 0
fi
users="${1:-1000000}"
[[ "$users" =~ ^[1-9][0-9]{0,8}$ ]] || { echo "USERS: 1 to 999999999, not '$users'" >&2; exit 2; }
url="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/user_service}"
tag="s$(date +%s)"
now_ms=$(($(date +%s%N) / 1000000))
first_ms=$((now_ms - users))
half=$(((users + 1) / 2))
started=$SECONDS
part() {
    local from=$1 to=$2
    ((from <= to)) || return 0
    {
        echo "PREPARE seed(bigint, bigint, text, bigint, text) AS"
        cat scripts/seed-users.sql
        echo ";"
        echo "EXECUTE seed($from, $to, '$tag', $first_ms, '\$2b\$10\$abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWX');"
    } | psql "$url" -v ON_ERROR_STOP=1 -q -o /dev/null
}
part 0 $((half - 1)) &
first=$!
part "$half" $((users - 1))
wait "$first"
inserted=$SECONDS
psql "$url" -v ON_ERROR_STOP=1 -q -c "VACUUM (ANALYZE) users"
echo "seeded $users users (tag $tag) in $((SECONDS - started)) s: insert $((inserted - started)) s, vacuum and analyze $((SECONDS - inserted)) s"
