//! Measuring: every selected workload at every concurrency, the service's RSS around them,
//! and what runs between two workloads (the cache warming, a frozen dependency, settling
//! after writes).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use sqlx::PgPool;

use crate::drive::drive;
use crate::opts::Opts;
use crate::report::{Rss, Runs, Stats};
use crate::setup::Setup;
use crate::workloads::{Job, Workload};
use crate::{ceilings, cpu, report, scale, service};

/// Every selected workload at every concurrency, `opts.runs` times, with the service's RSS
/// sampled every 100 ms throughout.
pub async fn measure(opts: &Opts, setup: &Setup) -> (Runs, Rss) {
    let mut rss = Rss::default();
    if let Some(pid) = setup.pid {
        rss.idle_before = service::settled_rss_mib(pid).await;
    }
    let peak = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = setup
        .pid
        .map(|pid| tokio::spawn(sample_peak(pid, peak.clone(), stop.clone())));
    let mut runs: Runs = BTreeMap::new();
    let mut pools: BTreeMap<u32, PgPool> = BTreeMap::new();
    for run in 1..=opts.runs {
        for &w in &opts.only {
            for &c in &opts.concurrency {
                let Some(job) = job_for(w, c, setup, &mut pools).await else {
                    continue;
                };
                // A service in steady state has its users cached; the in-process copy lives
                // 30 s and Redis' 5 min, less than a run takes.
                if w.reads()
                    && let Err(e) = setup.ctx.warm(w == Workload::RestEmail).await
                {
                    eprintln!("warming the cache failed ({e}); measuring from cold");
                }
                // Frozen from the start of the warm-up, so that the window measures the
                // service once it has noticed.
                let frozen = w.frozen().zip(setup.relays.as_ref());
                if let Some((d, relays)) = frozen {
                    relays.freeze(d);
                }
                let from = tokio::time::Instant::now() + opts.warmup;
                let until = from + opts.duration;
                // The scale reads: which cache tier answered, in the measured window.
                let tiers = w
                    .scale()
                    .then(|| scale::watch_tiers(setup.ctx.clone(), from, until));
                let cpu = cpu::watch(setup.pid, from, until);
                let m = drive(&setup.ctx, &job, c, opts.warmup, opts.duration).await;
                let tiers = match tiers {
                    Some(t) => t.await.ok().flatten(),
                    None => None,
                };
                let cpu = cpu.await.unwrap_or_default();
                if let Some((d, relays)) = frozen {
                    relays.thaw(d);
                    match setup.ctx.recovery().await {
                        Some(t) => eprintln!(
                            "  {} thawed: /health ok again {:.1} s later",
                            d.name(),
                            t.as_secs_f64()
                        ),
                        None => eprintln!("  {} thawed: /health not ok within 60 s", d.name()),
                    }
                }
                let s = Stats::of(&m, tiers, cpu);
                eprintln!(
                    "run {run}/{}: {:<20} c={c:<4} {:>8.0} req/s  p50 {:.2} ms  p99 {:.2} ms  errors {}  CPU µs a request: service {}, machine {}",
                    opts.runs,
                    w.name(),
                    s.rps,
                    s.p50,
                    s.p99,
                    s.errors,
                    report::micros(s.cpu.0),
                    report::micros(s.cpu.1)
                );
                if let Some(p) = tiers.and_then(|t| t.percentages()) {
                    eprintln!(
                        "  cache: local {:.1} %, redis {:.1} %, miss {:.1} % of the users read",
                        p[0], p[1], p[2]
                    );
                }
                runs.entry((w, c)).or_default().push(s);
                if w.writes() {
                    settle_writes(setup).await;
                }
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    if let Some(s) = sampler {
        let _ = s.await;
        rss.peak = Some(f64::from_bits(peak.load(Ordering::Relaxed))).filter(|v| *v > 0.0);
    }
    if let Some(pid) = setup.pid {
        rss.idle_after = service::settled_rss_mib(pid).await;
    }
    (runs, rss)
}

/// After a workload that writes: waits for the outbox to drain, then vacuums the other tables
/// it wrote, as autovacuum would (this machine's PostgreSQL runs with `autovacuum = off`).
/// The outbox is left alone: the service vacuums it itself as it publishes.
async fn settle_writes(setup: &Setup) {
    match setup.ctx.drain_outbox().await {
        Ok(took) => eprintln!("  outbox drained in {:.1} s", took.as_secs_f64()),
        Err(e) => eprintln!("  {e}"),
    }
    let Some(url) = &setup.sql_url else { return };
    let vacuum = async {
        let pool = PgPool::connect(url).await?;
        sqlx::query("VACUUM (ANALYZE) users, applied_requests, payments")
            .execute(&pool)
            .await?;
        pool.close().await;
        Ok::<_, sqlx::Error>(())
    };
    if let Err(e) = vacuum.await {
        eprintln!("  vacuum failed: {e}");
    }
}

/// The job of `w` at concurrency `c`, or `None` (with a note) when it cannot run here.
async fn job_for(
    w: Workload,
    c: usize,
    setup: &Setup,
    pools: &mut BTreeMap<u32, PgPool>,
) -> Option<Arc<Job>> {
    if w.frozen().is_some() && setup.relays.is_none() {
        eprintln!(
            "{} skipped: it needs the service the bench starts",
            w.name()
        );
        return None;
    }
    if !w.sql() {
        return Some(Arc::new(Job::Service(w)));
    }
    let Some(url) = &setup.sql_url else {
        eprintln!(
            "{} skipped: with --service-url it needs --database-url",
            w.name()
        );
        return None;
    };
    let service_pool: u32 = std::env::var("DB_POOL_SIZE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16);
    let size = service_pool
        .min(u32::try_from(c).unwrap_or(u32::MAX))
        .max(1);
    if let std::collections::btree_map::Entry::Vacant(slot) = pools.entry(size) {
        match ceilings::sql_pool(url, size).await {
            Ok(pool) => {
                slot.insert(pool);
            }
            Err(e) => {
                eprintln!("{} skipped: {e}", w.name());
                return None;
            }
        }
    }
    pools.get(&size).map(|p| Arc::new(Job::Sql(w, p.clone())))
}

/// Keeps the highest RSS of `pid` (as f64 bits) until `stop`.
async fn sample_peak(pid: u32, peak: Arc<AtomicU64>, stop: Arc<AtomicBool>) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        if let Some(mib) = service::rss_mib(pid)
            && mib > f64::from_bits(peak.load(Ordering::Relaxed))
        {
            peak.store(mib.to_bits(), Ordering::Relaxed);
        }
    }
}
