//! The soak: a mixed load for a long while, with the service's RSS sampled every 10 s.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::http::Conn;
use crate::report::SoakPoint;
use crate::service::rss_mib;
use crate::workloads::{Ctx, Job, Rng, Workload};

/// The mix: workers per workload.
pub const MIX: [(Workload, usize); 3] = [
    (Workload::RestGet, 16),
    (Workload::RestBatch10, 8),
    (Workload::RestCreate, 8),
];

pub fn describe() -> String {
    MIX.iter()
        .map(|(w, n)| format!("{n} × {}", w.name()))
        .collect::<Vec<_>>()
        .join(", ")
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    errors: AtomicU64,
}

/// Runs the mix for `length`; returns the curve, a point every 10 s and one at the end.
pub async fn soak(ctx: &Arc<Ctx>, pid: Option<u32>, length: Duration) -> Vec<SoakPoint> {
    let started = Instant::now();
    let until = started + length;
    let counters = Arc::new(Counters::default());
    let mut workers = Vec::new();
    for (i, (w, n)) in MIX.into_iter().enumerate() {
        for k in 0..n {
            let (ctx, counters) = (ctx.clone(), counters.clone());
            let seed = (i * 1000 + k) as u64 + 7;
            workers.push(tokio::spawn(async move {
                let job = Job::Service(w);
                let mut rng = Rng::new(seed);
                let mut conn = Conn::default();
                let mut n = 0u64;
                while Instant::now() < until {
                    n += 1;
                    let uniq = format!("soak{seed}-{n}");
                    let ok = ctx.call(&job, &mut conn, &mut rng, &uniq).await.is_ok();
                    counters.requests.fetch_add(1, Ordering::Relaxed);
                    if !ok {
                        counters.errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
    }
    let point = |counters: &Counters| SoakPoint {
        secs: started.elapsed().as_secs_f64(),
        rss: pid.and_then(rss_mib),
        requests: counters.requests.load(Ordering::Relaxed),
        errors: counters.errors.load(Ordering::Relaxed),
    };
    let mut points = vec![point(&counters)];
    let mut tick = started + Duration::from_secs(10);
    while tick < until {
        tokio::time::sleep_until(tick).await;
        points.push(point(&counters));
        tick += Duration::from_secs(10);
    }
    for w in workers {
        let _ = w.await;
    }
    points.push(point(&counters));
    points
}
