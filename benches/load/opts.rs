//! Command-line options and their environment variables (a flag wins over its variable).

use std::time::Duration;

use crate::workloads::Workload;

pub const HELP: &str = "\
cargo bench --bench load [-- OPTIONS]

Starts user-service (release build) on its own database, queue, exchange and cache prefix,
seeds users, drives each workload at each concurrency, measures the ceilings, prints a table
and writes it as JSON.

Options (environment variable in brackets; a flag wins):
  --users N             users to seed [BENCH_USERS] (10000)
  --seed HOW            how: `service` (its batch create, 100 a request), `sql` (straight
                        into PostgreSQL, about 5 s a million; see benches/load/seed_sql.rs)
                        or `auto`: sql above 100000 users, else service [BENCH_SEED] (auto)
  --concurrency LIST    concurrencies to drive, comma list [BENCH_CONCURRENCY] (32,256)
  --duration SECS       measured seconds per workload and concurrency [BENCH_DURATION] (10)
  --warmup SECS         unmeasured seconds before each measurement [BENCH_WARMUP] (1.5)
  --runs N              repeat the measured set; the table shows medians [BENCH_RUNS] (1)
  --only LIST           workloads to run (names below; `scale` for the scale set, `none`
                        for none) [BENCH_ONLY] (all but the scale set)
  --soak SECS           then a mixed load (16 get, 8 batch-10, 8 create workers) for SECS,
                        RSS sampled every 10 s [BENCH_SOAK] (0: no soak)
  --json PATH           where the JSON goes [BENCH_JSON] (target/bench/load-<unix time>.json)
  --database-url URL    the bench database, dropped and recreated at start
                        [BENCH_DATABASE_URL] (postgres://postgres@127.0.0.1:5432/user_service_bench)
  --amqp-url URL        RabbitMQ [BENCH_AMQP_URL] (amqp://guest:guest@127.0.0.1:5672/%2f)
  --help                this text

Driving a service that is already running instead (nothing is started, dropped or purged):
  --service-url URL     its REST base, e.g. http://127.0.0.1:3001 [BENCH_SERVICE_URL]
  --rpc-queue NAME      its RPC_QUEUE [BENCH_RPC_QUEUE] (user-service.rpc)
  --pid PID             its process id, for the RSS figures [BENCH_PID]
  --api-key KEY         sent as x-api-key on both transports [BENCH_API_KEY]
  (the SQL ceilings and --seed sql then need --database-url; ceil-sql-create writes users)

The scale set runs only when named, e.g. with a million users:
  cargo bench --bench load -- --users 1000000 --only scale --concurrency 32

Workloads:
";

#[derive(Debug, Clone)]
pub struct Opts {
    pub users: usize,
    pub seed: SeedBy,
    pub concurrency: Vec<usize>,
    pub duration: Duration,
    pub warmup: Duration,
    pub runs: usize,
    pub only: Vec<Workload>,
    pub soak: Duration,
    pub json: Option<String>,
    pub database_url: Option<String>,
    pub amqp_url: String,
    pub service_url: Option<String>,
    pub rpc_queue: String,
    pub pid: Option<u32>,
    pub api_key: Option<String>,
    /// The service exports every request's spans to a local OTLP receiver (`otlp-sink`).
    pub export_spans: bool,
}

/// How the users are seeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeedBy {
    /// Through the service's batch create, 100 a request.
    Service,
    /// Straight into PostgreSQL (`seed_sql.rs`).
    Sql,
}

impl SeedBy {
    pub fn name(self) -> &'static str {
        match self {
            Self::Service => "service",
            Self::Sql => "sql",
        }
    }
}

/// `--seed auto` seeds more users than this by SQL.
pub const SQL_SEED_ABOVE: usize = 100_000;

pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/user_service_bench";
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// What the command line asked for.
pub enum Parsed {
    Run(Box<Opts>),
    Help,
}

pub fn help_text() -> String {
    let mut text = HELP.to_owned();
    for w in Workload::all() {
        if w == Workload::SCALE[0] {
            text.push_str("The scale set (`--only scale`; reads over every seeded user):\n");
        }
        text.push_str(&format!("  {:<20} {}\n", w.name(), w.describe()));
    }
    text
}

/// Reads the flags in `args` (program name excluded) over the environment.
pub fn parse(args: &[String]) -> Result<Parsed, String> {
    let mut raw: Vec<(String, String)> = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            // cargo bench passes --bench to every bench binary.
            "--bench" => {}
            "--help" | "-h" => return Ok(Parsed::Help),
            flag if flag.starts_with("--") => {
                let (name, value) = match flag.split_once('=') {
                    Some((n, v)) => (n.to_owned(), v.to_owned()),
                    None => {
                        let v = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
                        (flag.to_owned(), v.clone())
                    }
                };
                raw.push((name, value));
            }
            // A filter word, as `cargo bench -- NAME` would pass; not ours.
            other => return Err(format!("unexpected argument '{other}' (see --help)")),
        }
    }
    let known = [
        "--users",
        "--seed",
        "--concurrency",
        "--duration",
        "--warmup",
        "--runs",
        "--only",
        "--soak",
        "--json",
        "--database-url",
        "--amqp-url",
        "--service-url",
        "--rpc-queue",
        "--pid",
        "--api-key",
        "--export-spans",
    ];
    if let Some((bad, _)) = raw.iter().find(|(n, _)| !known.contains(&n.as_str())) {
        return Err(format!("unknown option {bad} (see --help)"));
    }
    let get = |flag: &str, var: &str| -> Option<String> {
        raw.iter()
            .rev()
            .find(|(n, _)| n == flag)
            .map(|(_, v)| v.clone())
            .or_else(|| std::env::var(var).ok())
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let users = number(get("--users", "BENCH_USERS"), "--users", 10_000)?;
    let opts = Opts {
        users,
        seed: seed_by(get("--seed", "BENCH_SEED"), users)?,
        concurrency: concurrency(get("--concurrency", "BENCH_CONCURRENCY"))?,
        duration: seconds(get("--duration", "BENCH_DURATION"), "--duration", 10.0)?,
        warmup: seconds(get("--warmup", "BENCH_WARMUP"), "--warmup", 1.5)?,
        runs: number(get("--runs", "BENCH_RUNS"), "--runs", 1)?.max(1),
        only: only(get("--only", "BENCH_ONLY"))?,
        soak: seconds(get("--soak", "BENCH_SOAK"), "--soak", 0.0)?,
        json: get("--json", "BENCH_JSON"),
        database_url: get("--database-url", "BENCH_DATABASE_URL"),
        amqp_url: get("--amqp-url", "BENCH_AMQP_URL").unwrap_or_else(|| DEFAULT_AMQP_URL.into()),
        service_url: get("--service-url", "BENCH_SERVICE_URL"),
        rpc_queue: get("--rpc-queue", "BENCH_RPC_QUEUE")
            .unwrap_or_else(|| "user-service.rpc".into()),
        pid: get("--pid", "BENCH_PID")
            .map(|p| {
                p.parse()
                    .map_err(|_| format!("--pid: '{p}' is not a process id"))
            })
            .transpose()?,
        api_key: get("--api-key", "BENCH_API_KEY"),
        export_spans: match get("--export-spans", "BENCH_EXPORT_SPANS").as_deref() {
            None | Some("off") => false,
            Some("on") => true,
            Some(other) => return Err(format!("--export-spans: '{other}' is not on or off")),
        },
    };
    if opts.users == 0 {
        return Err("--users: at least 1".into());
    }
    Ok(Parsed::Run(Box::new(opts)))
}

fn number(v: Option<String>, flag: &str, default: usize) -> Result<usize, String> {
    v.map_or(Ok(default), |v| {
        v.replace('_', "")
            .parse()
            .map_err(|_| format!("{flag}: '{v}' is not a whole number"))
    })
}

fn seconds(v: Option<String>, flag: &str, default: f64) -> Result<Duration, String> {
    let secs = v.map_or(Ok(default), |v| {
        v.parse::<f64>()
            .map_err(|_| format!("{flag}: '{v}' is not a number of seconds"))
    })?;
    Duration::try_from_secs_f64(secs).map_err(|_| format!("{flag}: {secs} is not a duration"))
}

fn concurrency(v: Option<String>) -> Result<Vec<usize>, String> {
    let list = v.unwrap_or_else(|| "32,256".into());
    let levels = list
        .split(',')
        .map(|c| match c.trim().parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!("--concurrency: '{c}' is not a positive number")),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(levels)
}

fn seed_by(v: Option<String>, users: usize) -> Result<SeedBy, String> {
    match v.as_deref().unwrap_or("auto") {
        "service" => Ok(SeedBy::Service),
        "sql" => Ok(SeedBy::Sql),
        "auto" if users > SQL_SEED_ABOVE => Ok(SeedBy::Sql),
        "auto" => Ok(SeedBy::Service),
        other => Err(format!("--seed: '{other}' is not service, sql or auto")),
    }
}

fn only(v: Option<String>) -> Result<Vec<Workload>, String> {
    let Some(list) = v else {
        return Ok(Workload::DEFAULT.to_vec());
    };
    if list == "none" {
        return Ok(Vec::new());
    }
    let mut picked = Vec::new();
    for name in list.split(',').map(str::trim) {
        if name == "scale" {
            picked.extend(Workload::SCALE);
            continue;
        }
        let w = Workload::from_name(name)
            .ok_or_else(|| format!("--only: no workload '{name}' (see --help)"))?;
        picked.push(w);
    }
    Ok(picked)
}
