//! Load benchmark of user-service: throughput and latency of its REST and RPC operations,
//! each next to the ceiling it cannot exceed on this machine, and the service's memory.
//!
//! ```sh
//! cargo bench --bench load                                   # everything, defaults
//! cargo bench --bench load -- --duration 5 --concurrency 32,256 --runs 3
//! cargo bench --bench load -- --only rest-get,rpc-get,ceil-warp,ceil-rpc-noop
//! cargo bench --bench load -- --soak 600 --only none         # memory over a long mixed load
//! cargo bench --bench load -- --users 1000000 --only scale --concurrency 32   # at scale
//! BENCH_DURATION=5 BENCH_ONLY=rest-create,ceil-sql-create cargo bench --bench load
//! ```
//!
//! One command does it all. It builds and starts the release binary of user-service
//! (`CARGO_BIN_EXE_user-service`) on its own configuration: the database
//! `user_service_bench` (dropped and recreated at start), its own `RPC_QUEUE`,
//! `EVENTS_EXCHANGE` and `CACHE_PREFIX` named after that database (`user-service-bench.rpc`,
//! `….events`, `user-service-bench`), a free `HTTP_ADDR` port, `RUST_LOG=warn`, local open
//! mode (no keys; the caller is `local`) with `RATE_LIMITS=local=4000000000/1`, a limit that
//! never binds. `DB_POOL_SIZE`, `RPC_PREFETCH`, `REDIS_URL` and `_RJEM_MALLOC_CONF` pass
//! through when set. It waits for `/health/ready`, seeds users — through batch create (100 per
//! request), or above 100,000 users straight into PostgreSQL (`--seed`; see `seed_sql.rs`:
//! the rows a create writes, a million in about five seconds) — reads the service's RSS once
//! it has settled, then drives each workload at each concurrency: a warm-up, then the
//! measured window. Before each cached read workload (not the scale reads, nor a listing,
//! which never asks the cache) it reads every seeded user
//! once (100-id batch lookups), so reads are measured against a cache as warm as in steady
//! state, not the cold one that seeding or an expired entry leaves. After a
//! workload that writes, it waits until the service has published every event it left in the
//! outbox, so that no measurement shares the machine with the publishing of an earlier one's
//! events, and vacuums the tables written other than the outbox, which the service vacuums
//! itself (as autovacuum would; the development machine runs PostgreSQL with it off). The
//! service's log goes to `target/bench/service-<unix time>.log`; the service is stopped
//! with SIGTERM at the end, on Ctrl-C, on a panic, and if this process dies.
//!
//! Options, as flags after `--` or environment variables (a flag wins):
//!
//! | flag | variable | default | |
//! |---|---|---|---|
//! | `--users N` | `BENCH_USERS` | 10000 | users seeded; reads pick among them uniformly (`scale-zipf`: by popularity) |
//! | `--seed HOW` | `BENCH_SEED` | `auto` | `service` (batch create), `sql` (`seed_sql.rs`); `auto`: `sql` above 100,000 users |
//! | `--concurrency LIST` | `BENCH_CONCURRENCY` | `32,256` | concurrent callers |
//! | `--duration SECS` | `BENCH_DURATION` | 10 | measured seconds per workload and concurrency |
//! | `--warmup SECS` | `BENCH_WARMUP` | 1.5 | unmeasured seconds before each |
//! | `--runs N` | `BENCH_RUNS` | 1 | repeats of the measured set; the table shows medians |
//! | `--only LIST` | `BENCH_ONLY` | all but the scale set | workload names (`--help` lists them), `scale` for the scale set, or `none` |
//! | `--soak SECS` | `BENCH_SOAK` | 0 | a mixed load afterwards, RSS every 10 s |
//! | `--json PATH` | `BENCH_JSON` | `target/bench/load-<unix time>.json` | |
//! | `--database-url URL` | `BENCH_DATABASE_URL` | `…/user_service_bench` | with `--service-url`: for the SQL ceilings and `--seed sql` |
//! | `--amqp-url URL` | `BENCH_AMQP_URL` | `amqp://guest:guest@127.0.0.1:5672/%2f` | |
//! | `--service-url URL` | `BENCH_SERVICE_URL` | | drive a running service instead |
//! | `--rpc-queue NAME` | `BENCH_RPC_QUEUE` | `user-service.rpc` | with `--service-url` |
//! | `--pid PID` | `BENCH_PID` | | with `--service-url`: whose RSS to report |
//! | `--api-key KEY` | `BENCH_API_KEY` | | with `--service-url`: `x-api-key` on both transports |
//! | `--export-spans on` | `BENCH_EXPORT_SPANS` | `off` | the service exports every request's spans over OTLP/HTTP to a receiver of the bench's (`BENCH_ROLE=otlp-sink`: answers 200 and counts), sampler `always_on` |
//!
//! Every request is an error unless it gets its expected status (201 for creates and
//! payments, else 200). Latencies go into an HDR histogram (µs, 3 significant figures);
//! req/s counts the successful requests that started and ended inside the window. All REST
//! traffic, the service's and the warp ceiling's, goes the same way: each worker keeps one
//! keep-alive HTTP/1.1 connection and sends over hyper's bare connection API (as `wrk`
//! does, so the generator takes little of the CPU it shares with the server); all RPC
//! traffic through the client kit (`user_service_client::Client`, raw `request`: no
//! retries, no breaker, 10 s timeout).
//!
//! **The ceilings**, measured in the same run with the same clients and concurrencies; each
//! row's `ratio` is its req/s over its ceiling's:
//!
//! * `ceil-warp` (for REST reads): a bare warp filter on the service's server code
//!   (`user_service::http::server`, its default limits; this binary re-run with
//!   `BENCH_ROLE=warp-fixed`, multi-thread tokio with the default workers) answering every
//!   GET with a fixed JSON body the size of one user (the body of an actual
//!   `GET /api/internal/users/{id}`); `ceil-warp-batch100` serves the body of a 100-id
//!   batch lookup. It is the cost of HTTP alone — the same server library, client, loopback
//!   and CPUs — so no REST read can be faster.
//! * `ceil-rpc-noop` (for RPC reads): a responder (`BENCH_ROLE=rpc-noop`) on the same broker
//!   with the service's prefetch (`RPC_PREFETCH`, 200), replying to `reply_to` with the
//!   request's `correlation_id` and a fixed `{"status":200,"data":{user}}` without waiting
//!   for a publisher confirm, then acking. It is the cost of the broker round trip and the
//!   client kit alone; the service adds its work.
//! * `ceil-sql-create` (for REST and RPC creates): the SQL transaction of a keyed create,
//!   read from the store (`actors/src/store/ledger.rs`, `creates.rs`, `outbox.rs`) — the
//!   key's advisory lock and lookup, the users insert, the outbox insert, the ledger insert,
//!   commit with normal durability — one transaction per create, through sqlx with a pool
//!   of the service's `DB_POOL_SIZE` (16, or the concurrency when smaller). The service
//!   commits concurrent creates in groups (one flush for many), so it may pass this figure;
//!   what it adds is parsing, the actors, the cache invalidation and the transport.
//! * `ceil-sql-get`, `ceil-sql-email`, `ceil-sql-batch100` (for the scale reads): PostgreSQL's
//!   indexed fetch of one user by id (`id = $1`), by e-mail (the store's `lower(email) = $1`),
//!   or of 100 by id (the store's `id = ANY($1)`), the columns the store reads, through sqlx
//!   with a pool as above, on random seeded users; rows are not decoded. It is what
//!   PostgreSQL serves of the reads that miss the cache. `ceil-sql-list-deep`: the listing's
//!   page of 100 after a random seeded user, the same way (for `scale-list-deep`);
//!   `ceil-sql-search-inside`: the search's two statements for 4 letters from inside a
//!   seeded name (for `scale-search-inside`).
//!
//! **The scale set** (`--only scale`, or by name; never in the default set), meant for a
//! million users: `scale-get`, `scale-email` and `scale-batch100` are `rest-get`,
//! `rest-email` and `rest-batch100` over every seeded user without warming the cache first
//! (the reads that miss are what they measure), against the SQL ceilings above;
//! `scale-zipf` reads users by popularity, Zipf's law with s = 1.1 (80 % by id, 20 % by
//! e-mail), against `ceil-warp`. For each of them the bench reads the service's cache counters
//! (`/health/integrations`) at the start and the end of the window and reports the share of
//! the users read that the in-process copy, Redis, or neither (a miss) answered. See
//! `scale.rs`.
//!
//! **The frozen dependencies** (`frozen-redis`, `frozen-postgres`, `frozen-rabbitmq`): when one
//! is selected, the service the bench starts reaches PostgreSQL, Redis and RabbitMQ through TCP
//! relays of the bench's own (the tests' `tests/api/relay.rs`), for the whole run, so the
//! other workloads of that run measure the same path. Each freezes one relay (connections stay
//! open, nothing is forwarded: a stopped process) from the start of its warm-up to the end of
//! its window, then thaws it and prints how long `/health` took to say `ok` again.
//! `frozen-redis` is `rest-get` over every seeded user; `frozen-rabbitmq` is half `rest-get`,
//! half `rest-create`; `frozen-postgres` is `rest-get` of the seeded users, warmed into the
//! cache, and one request in ten reads an id no cache holds (a user that does not exist):
//! those are measured apart, whatever their status (0: no answer within 10 s), every one begun
//! in the window however late it ends, as the share answered 503 and the longest answer.
//!
//! **CPU a request** (each row's `svc µs` and `all µs`): the service's threads' run time
//! and the whole machine's busy time (the bench and PostgreSQL included) in the measured
//! window, over the requests answered in it. A rate moves with the VM's hour; this moves far
//! less, so it is what shows a change on a request path. See `cpu.rs`.
//!
//! Also reported: the service's VmRSS idle after start and seeding, its peak during the load
//! (sampled every 100 ms) and idle after it (idle: once two readings a second apart agree,
//! since freed pages go back a few seconds after a burst); with `--soak`, the RSS curve.

mod ceilings;
mod cpu;
mod drive;
mod frozen;
mod http;
mod measure;
mod opts;
mod report;
mod requests;
mod scale;
mod seed;
mod seed_sql;
mod service;
mod setup;
mod soak;
mod workloads;

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::json;

use measure::measure;
use opts::Parsed;
use setup::Setup;

fn main() {
    let role = std::env::var("BENCH_ROLE").ok();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => exit_with(&format!("tokio runtime: {e}")),
    };
    let result = match role.as_deref() {
        Some("rpc-noop") => runtime.block_on(ceilings::rpc_noop()),
        Some("warp-fixed") => runtime.block_on(ceilings::warp_fixed()),
        Some("otlp-sink") => runtime.block_on(ceilings::otlp_sink()),
        Some(other) => Err(format!("unknown BENCH_ROLE {other}")),
        None => runtime.block_on(bench()),
    };
    if let Err(e) = result {
        exit_with(&e);
    }
}

fn exit_with(message: &str) -> ! {
    eprintln!("load bench: {message}");
    std::process::exit(1)
}

async fn bench() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = match opts::parse(&args)? {
        Parsed::Help => {
            print!("{}", opts::help_text());
            return Ok(());
        }
        Parsed::Run(opts) => *opts,
    };
    tokio::spawn(async {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("interrupted: stopping the processes the bench started");
            service::terminate_all();
            std::process::exit(130);
        }
    });
    let started = unix_time();
    let out_dir = target_dir().join("bench");
    std::fs::create_dir_all(&out_dir).map_err(|e| format!("{}: {e}", out_dir.display()))?;
    let mut setup = Setup::new(&opts, started, &out_dir).await?;
    let (runs, rss) = measure(&opts, &setup).await;
    let soak = if opts.soak.is_zero() {
        None
    } else {
        eprintln!("soak: {} for {:?}", soak::describe(), opts.soak);
        Some(soak::soak(&setup.ctx, setup.pid, opts.soak).await)
    };
    setup.stop();
    if !opts.only.is_empty() {
        report::print_table(&runs, opts.runs);
        rss.print();
    }
    if let Some(points) = &soak {
        report::print_soak(points, &soak::describe());
    }
    let path = opts.json.clone().map_or_else(
        || out_dir.join(format!("load-{started}.json")),
        PathBuf::from,
    );
    let doc = json!({
        "startedAt": started,
        "options": {
            "users": opts.users, "seed": opts.seed.name(), "seedSecs": setup.seed_secs,
            "concurrency": opts.concurrency,
            "durationSecs": opts.duration.as_secs_f64(), "warmupSecs": opts.warmup.as_secs_f64(),
            "runs": opts.runs, "only": opts.only.iter().map(|w| w.name()).collect::<Vec<_>>(),
            "soakSecs": opts.soak.as_secs_f64(),
        },
        "service": {"url": setup.ctx.base, "pid": setup.pid, "started": opts.service_url.is_none()},
        "results": report::runs_json(&runs, opts.runs),
        "rss": rss.json(),
        "soak": soak.as_deref().map(|p| report::soak_json(p, &soak::describe())),
    });
    let text = serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?;
    std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    println!("\nJSON: {}", path.display());
    Ok(())
}

fn unix_time() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `CARGO_TARGET_DIR`, else the `target` this binary was built in (`target/release/deps/`).
fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.ancestors().nth(3).map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("target"))
}
