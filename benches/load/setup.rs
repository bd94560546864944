//! What the measurements run against: the service (started here, or given), the seeded
//! users, the ceiling processes and the clients.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use user_service_client::{Client, ClientConfig};

use crate::frozen::{Relays, Routed};
use crate::opts::{self, Opts, SeedBy};
use crate::scale::{self, Zipf};
use crate::service::{self, Proc};
use crate::workloads::{Ctx, Workload};
use crate::{seed, seed_sql};

/// What the measurements run against: the service, the ceiling processes, the clients.
pub struct Setup {
    pub ctx: Arc<Ctx>,
    pub pid: Option<u32>,
    /// The bench database, for the SQL ceiling.
    pub sql_url: Option<String>,
    /// Between the service and its servers, when a `frozen-*` workload is selected.
    pub relays: Option<Relays>,
    /// How long seeding the users took.
    pub seed_secs: f64,
    /// Stopped in this order: the ceilings, then the service.
    procs: Vec<Proc>,
}

impl Setup {
    pub async fn new(opts: &Opts, started: u64, out_dir: &Path) -> Result<Self, String> {
        let tag = format!("{started:x}");
        let http = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(usize::MAX)
            .tcp_nodelay(true)
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| e.to_string())?;
        let mut procs = Vec::new();
        let db = opts
            .database_url
            .clone()
            .unwrap_or_else(|| opts::DEFAULT_DATABASE_URL.into());
        // Named after the database (`user-service-bench` for `user_service_bench`), so that
        // runs on different databases do not share a queue or cache prefix.
        let names = service::database_name(&db)
            .map_or_else(|_| "user-service-bench".to_owned(), |n| n.replace('_', "-"));
        let noop_queue = format!("{names}.noop");
        let mut relays = None;
        let (base, pid, rpc_queue, sql_url) = match &opts.service_url {
            Some(url) => (
                url.trim_end_matches('/').to_owned(),
                opts.pid,
                opts.rpc_queue.clone(),
                opts.database_url.clone(),
            ),
            None => {
                let redis = std::env::var("REDIS_URL")
                    .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
                let mut urls = Routed {
                    database_url: db.clone(),
                    redis_url: redis.clone(),
                    amqp_url: opts.amqp_url.clone(),
                };
                if opts.only.iter().any(|w| w.frozen().is_some()) {
                    let (started, routed) = Relays::start(urls).await?;
                    eprintln!("the service reaches its servers through the bench's relays");
                    (relays, urls) = (Some(started), routed);
                }
                let otlp_endpoint = match opts.export_spans {
                    true => {
                        let (proc, line) = service::start_role("otlp-sink", &[])?;
                        procs.push(proc);
                        let port = line.trim_start_matches("READY").trim().to_owned();
                        eprintln!("the service exports its spans to an OTLP sink on port {port}");
                        Some(format!("http://127.0.0.1:{port}"))
                    }
                    false => None,
                };
                let env = service::ServiceEnv {
                    database_url: urls.database_url,
                    redis_url: urls.redis_url,
                    amqp_url: urls.amqp_url,
                    rpc_queue: format!("{names}.rpc"),
                    events_exchange: format!("{names}.events"),
                    cache_prefix: names.clone(),
                    http_port: service::free_port()?,
                    otlp_endpoint,
                };
                service::reset_database(&db).await?;
                service::clear_cache(&redis, &env.cache_prefix).await?;
                let rpc = env.rpc_queue.clone();
                let stale = [rpc.clone(), format!("{rpc}.dlq"), noop_queue.clone()];
                service::delete_queues(&opts.amqp_url, &stale).await?;
                let log = out_dir.join(format!("service-{started}.log"));
                eprintln!("starting user-service (log: {})", log.display());
                let proc = service::start_service(&env, &log, &http).await?;
                let base = format!("http://127.0.0.1:{}", env.http_port);
                let pid = proc.pid();
                procs.push(proc);
                (base, Some(pid), rpc, Some(db))
            }
        };
        let key = opts.api_key.as_deref();
        let seeding = std::time::Instant::now();
        let users = match (opts.seed, &sql_url) {
            (SeedBy::Service, _) => {
                eprintln!("seeding {} users through the service", opts.users);
                let users = seed::seed(&http, &base, key, opts.users, &tag).await?;
                let secs = seeding.elapsed().as_secs_f64();
                eprintln!(
                    "seeded {} users through the service in {secs:.1} s",
                    opts.users
                );
                users
            }
            (SeedBy::Sql, Some(url)) => {
                eprintln!("seeding {} users by SQL", opts.users);
                seed_sql::seed(url, opts.users, &tag).await?
            }
            (SeedBy::Sql, None) => {
                return Err("--seed sql: with --service-url it needs --database-url".into());
            }
        };
        let seed_secs = seeding.elapsed().as_secs_f64();
        let (one, batch) = seed::bodies(&http, &base, key, &users).await?;
        let wants = |ws: &[Workload]| opts.only.iter().any(|w| ws.contains(w));
        let uses_rpc = wants(&[Workload::RpcGet, Workload::RpcBatch10, Workload::RpcCreate]);
        let rpc = if uses_rpc {
            Some(rpc_client(opts, &rpc_queue).await?)
        } else {
            None
        };
        let noop = if wants(&[Workload::CeilRpcNoop]) {
            let body = out_dir.join("noop-reply.json");
            let reply = format!(
                r#"{{"status":200,"data":{}}}"#,
                String::from_utf8_lossy(&one)
            );
            std::fs::write(&body, reply).map_err(|e| e.to_string())?;
            let prefetch = std::env::var("RPC_PREFETCH").unwrap_or_else(|_| "200".into());
            let envs = [
                ("BENCH_AMQP_URL", opts.amqp_url.clone()),
                ("BENCH_QUEUE", noop_queue.clone()),
                ("BENCH_PREFETCH", prefetch),
                ("BENCH_BODY_FILE", body.display().to_string()),
            ];
            let (proc, _) = service::start_role("rpc-noop", &envs)?;
            procs.insert(0, proc);
            Some(rpc_client(opts, &noop_queue).await?)
        } else {
            None
        };
        let warp_base = if wants(&[Workload::CeilWarp, Workload::CeilWarpBatch100]) {
            let (one_file, batch_file) = (out_dir.join("one.json"), out_dir.join("batch.json"));
            std::fs::write(&one_file, &one).map_err(|e| e.to_string())?;
            std::fs::write(&batch_file, &batch).map_err(|e| e.to_string())?;
            let envs = [
                ("BENCH_ONE_FILE", one_file.display().to_string()),
                ("BENCH_BATCH_FILE", batch_file.display().to_string()),
            ];
            let (proc, line) = service::start_role("warp-fixed", &envs)?;
            procs.insert(0, proc);
            let port = line.trim_start_matches("READY").trim();
            Some(format!("http://127.0.0.1:{port}"))
        } else {
            None
        };
        eprintln!(
            "bodies: one user {} bytes, 100-id batch {} bytes",
            one.len(),
            batch.len()
        );
        let zipf = wants(&[Workload::ScaleZipf]).then(|| {
            let zipf = Zipf::new(users.ids.len(), scale::ZIPF_S);
            eprintln!(
                "scale-zipf: the most read 0.1 % of the users get {:.0} % of its reads, 1 % {:.0} %",
                zipf.head(0.001) * 100.0,
                zipf.head(0.01) * 100.0
            );
            zipf
        });
        let searches = [
            Workload::ScaleSearchPrefix,
            Workload::ScaleSearchInside,
            Workload::CeilSqlSearchInside,
        ];
        let names = match (&sql_url, wants(&searches)) {
            (Some(url), true) => scale::sample_names(url).await?,
            (None, true) => return Err("the searches need --database-url".into()),
            (_, false) => Vec::new(),
        };
        let ctx = Ctx {
            base,
            zipf,
            names,
            api_key: opts.api_key.clone(),
            rpc,
            noop,
            warp_base,
            users,
            tag,
        };
        Ok(Self {
            ctx: Arc::new(ctx),
            pid,
            sql_url,
            relays,
            seed_secs,
            procs,
        })
    }

    pub fn stop(&mut self) {
        self.procs.clear();
    }
}

async fn rpc_client(opts: &Opts, queue: &str) -> Result<Client, String> {
    let mut config = ClientConfig::new(opts.amqp_url.clone()).queue(queue);
    config.timeout = Duration::from_secs(10);
    config.retries = 0;
    if let Some(k) = &opts.api_key {
        config = config.api_key(k.clone());
    }
    Client::connect(config)
        .await
        .map_err(|e| format!("RPC client on {queue}: {e}"))
}
