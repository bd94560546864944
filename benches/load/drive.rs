//! Driving one workload at a concurrency: workers, the measured window, the histogram.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::time::Instant;

use crate::http::Conn;
use crate::workloads::{Answer, Ctx, Job, Rng};

/// What one measurement saw: latencies of the successful requests (µs) and the errors.
pub struct Measured {
    pub hist: Histogram<u64>,
    pub errors: u64,
    pub error_kinds: BTreeMap<String, u64>,
    pub secs: f64,
    pub aside: Aside,
}

/// The requests measured apart ([`Answer::Aside`]): how many got each status, and the
/// longest answer (µs).
#[derive(Debug, Clone, Default)]
pub struct Aside {
    pub statuses: BTreeMap<u16, u64>,
    pub longest_us: u64,
}

impl Aside {
    pub fn add(&mut self, other: &Aside) {
        for (status, n) in &other.statuses {
            *self.statuses.entry(*status).or_default() += n;
        }
        self.longest_us = self.longest_us.max(other.longest_us);
    }
}

impl Measured {
    fn empty(secs: f64) -> Self {
        Self {
            hist: Histogram::new(3).expect("3 significant figures is valid"),
            errors: 0,
            error_kinds: BTreeMap::new(),
            secs,
            aside: Aside::default(),
        }
    }

    fn add(&mut self, other: Measured) {
        // Both auto-resize, so adding cannot fail on range.
        let _ = self.hist.add(&other.hist);
        self.errors += other.errors;
        self.aside.add(&other.aside);
        for (k, n) in other.error_kinds {
            *self.error_kinds.entry(k).or_default() += n;
        }
    }

    pub fn rps(&self) -> f64 {
        self.hist.len() as f64 / self.secs
    }

    pub fn ms(&self, quantile: f64) -> f64 {
        if self.hist.is_empty() {
            return f64::NAN;
        }
        self.hist.value_at_quantile(quantile) as f64 / 1e3
    }
}

/// Runs `job` with `concurrency` workers: `warmup` unmeasured, then `duration` measured.
/// A request counts when it starts and ends inside the measured window.
pub async fn drive(
    ctx: &Arc<Ctx>,
    job: &Arc<Job>,
    concurrency: usize,
    warmup: Duration,
    duration: Duration,
) -> Measured {
    let from = Instant::now() + warmup;
    let until = from + duration;
    let workers: Vec<_> = (0..concurrency)
        .map(|w| {
            let (ctx, job) = (ctx.clone(), job.clone());
            tokio::spawn(async move { worker(&ctx, &job, w, from, until).await })
        })
        .collect();
    let mut total = Measured::empty(duration.as_secs_f64());
    for w in workers {
        match w.await {
            Ok(m) => total.add(m),
            Err(e) => {
                total.errors += 1;
                *total.error_kinds.entry(format!("worker: {e}")).or_default() += 1;
            }
        }
    }
    total
}

async fn worker(ctx: &Ctx, job: &Job, w: usize, from: Instant, until: Instant) -> Measured {
    let mut rng = Rng::new(w as u64 + 1 + u64::from(std::process::id()));
    let mut conn = Conn::default();
    let mut seen = Measured::empty(0.0);
    let mut n = 0u64;
    while Instant::now() < until {
        n += 1;
        let uniq = format!("{w}-{n}-{}", next_serial());
        let started = Instant::now();
        let outcome = ctx.call(job, &mut conn, &mut rng, &uniq).await;
        let ended = Instant::now();
        let us = u64::try_from((ended - started).as_micros().max(1)).unwrap_or(u64::MAX);
        // Measured apart: every one begun in the window, however long it took to end.
        if let Ok(Answer::Aside(status)) = outcome {
            if started >= from && started < until {
                *seen.aside.statuses.entry(status).or_default() += 1;
                seen.aside.longest_us = seen.aside.longest_us.max(us);
            }
            continue;
        }
        if started < from || ended > until {
            continue;
        }
        match outcome {
            Ok(Answer::Aside(_)) => {}
            Ok(Answer::Measured) => {
                let _ = seen.hist.record(us);
            }
            Err(kind) => {
                seen.errors += 1;
                *seen.error_kinds.entry(kind).or_default() += 1;
            }
        }
    }
    seen
}

/// A process-wide serial, so that workers of successive measurements never repeat a key.
fn next_serial() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SERIAL: AtomicU64 = AtomicU64::new(0);
    SERIAL.fetch_add(1, Ordering::Relaxed)
}
