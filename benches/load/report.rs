//! The results: one row per workload and concurrency (the median over runs), the service's
//! memory, the soak curve; printed as tables and written as JSON.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::cpu::Spent;
use crate::drive::{Aside, Measured};
use crate::scale::Tiers;
use crate::workloads::Workload;

/// One measurement's figures.
#[derive(Debug, Clone)]
pub struct Stats {
    pub rps: f64,
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub errors: u64,
    pub error_kinds: BTreeMap<String, u64>,
    pub aside: Aside,
    /// The scale reads: the users read in the window, by the cache tier that answered.
    pub cache: Option<Tiers>,
    /// CPU µs a request took in the window: the service's, the machine's.
    pub cpu: (Option<f64>, Option<f64>),
}

impl Stats {
    pub fn of(m: &Measured, cache: Option<Tiers>, cpu: Spent) -> Self {
        Self {
            rps: m.rps(),
            p50: m.ms(0.50),
            p99: m.ms(0.99),
            p999: m.ms(0.999),
            errors: m.errors,
            error_kinds: m.error_kinds.clone(),
            aside: m.aside.clone(),
            cache,
            cpu: cpu.per_request(m.hist.len()),
        }
    }

    fn json(&self) -> Value {
        let mut v = json!({
            "rps": round(self.rps, 1), "p50Ms": round(self.p50, 3), "p99Ms": round(self.p99, 3),
            "p999Ms": round(self.p999, 3), "errors": self.errors, "errorKinds": self.error_kinds,
            "serviceCpuUs": self.cpu.0.map_or(Value::Null, |us| round(us, 1)),
            "machineCpuUs": self.cpu.1.map_or(Value::Null, |us| round(us, 1)),
        });
        if !self.aside.statuses.is_empty() {
            v["aside"] = json!({
                "statuses": self.aside.statuses,
                "share503": round(share_503(&self.aside), 4),
                "longestMs": round(self.aside.longest_us as f64 / 1e3, 3),
            });
        }
        if let Some(t) = self.cache {
            v["cache"] = t.json();
        }
        v
    }
}

/// A CPU figure in whole µs, or `-`.
pub fn micros(us: Option<f64>) -> String {
    us.map_or("-".to_owned(), |us| format!("{us:.0}"))
}

/// Every run of one (workload, concurrency).
pub type Runs = BTreeMap<(Workload, usize), Vec<Stats>>;

fn round(v: f64, places: i32) -> Value {
    let f = 10f64.powi(places);
    if v.is_finite() {
        json!((v * f).round() / f)
    } else {
        Value::Null
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

/// The median of each figure over the runs (errors: the median count too; the cache tiers:
/// summed over the runs).
pub fn median_of(runs: &[Stats]) -> Stats {
    let pick = |f: fn(&Stats) -> f64| median(runs.iter().map(f).collect());
    let mut kinds = BTreeMap::new();
    let mut aside = Aside::default();
    let mut cache: Option<Tiers> = None;
    for s in runs {
        for (k, n) in &s.error_kinds {
            *kinds.entry(k.clone()).or_insert(0) += n;
        }
        aside.add(&s.aside);
        if let Some(t) = s.cache {
            cache.get_or_insert_default().add(t);
        }
    }
    Stats {
        rps: pick(|s| s.rps),
        p50: pick(|s| s.p50),
        p99: pick(|s| s.p99),
        p999: pick(|s| s.p999),
        errors: pick(|s| s.errors as f64).round() as u64,
        error_kinds: kinds,
        aside,
        cache,
        cpu: (
            Some(pick(|s| s.cpu.0.unwrap_or(f64::NAN))).filter(|v| v.is_finite()),
            Some(pick(|s| s.cpu.1.unwrap_or(f64::NAN))).filter(|v| v.is_finite()),
        ),
    }
}

/// Throughput over its ceiling's at the same concurrency.
fn ratio(runs: &Runs, w: Workload, c: usize) -> Option<f64> {
    let own = median_of(runs.get(&(w, c))?).rps;
    let ceiling = w.ceiling()?;
    let ceil = runs
        .get(&(ceiling, c))
        .or_else(|| match ceiling {
            Workload::CeilWarpBatch100 => runs.get(&(Workload::CeilWarp, c)),
            _ => None,
        })
        .map(|r| median_of(r).rps)?;
    (ceil > 0.0).then(|| own / ceil)
}

pub fn print_table(runs: &Runs, n_runs: usize) {
    let what = if n_runs > 1 {
        format!("median of {n_runs} runs")
    } else {
        "one run".to_owned()
    };
    println!(
        "\nThroughput and latency ({what}; ratio = req/s over its ceiling's req/s; CPU µs a request: the service's and the whole machine's)"
    );
    println!(
        "{:<20} {:>5} {:>10} {:>9} {:>9} {:>9} {:>7} {:>7} {:>7} {:>7}  ceiling",
        "workload",
        "conc",
        "req/s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "errors",
        "ratio",
        "svc µs",
        "all µs"
    );
    for (&(w, c), stats) in runs {
        let s = median_of(stats);
        let r = ratio(runs, w, c).map_or("-".to_owned(), |r| format!("{:.0}%", r * 100.0));
        let ceiling = w.ceiling().map_or("", Workload::name);
        println!(
            "{:<20} {:>5} {:>10.0} {:>9.2} {:>9.2} {:>9.2} {:>7} {:>7} {:>7} {:>7}  {ceiling}",
            w.name(),
            c,
            s.rps,
            s.p50,
            s.p99,
            s.p999,
            s.errors,
            r,
            micros(s.cpu.0),
            micros(s.cpu.1)
        );
    }
    for (&(w, c), stats) in runs {
        let a = median_of(stats).aside;
        if !a.statuses.is_empty() {
            println!(
                "{:<20} {:>5}  measured apart: {} (status × count), {:.1}% 503, longest {:.1} ms",
                w.name(),
                c,
                a.statuses
                    .iter()
                    .map(|(s, n)| format!("{s} × {n}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                share_503(&a) * 100.0,
                a.longest_us as f64 / 1e3
            );
        }
    }
    print_tiers(runs);
    let mut shown = false;
    for (&(w, c), stats) in runs {
        let s = median_of(stats);
        for (kind, n) in s.error_kinds.iter().take(3) {
            if !shown {
                println!("\nErrors (all runs):");
                shown = true;
            }
            println!("  {:<20} {:>5}  {n} × {kind}", w.name(), c);
        }
    }
}

/// Which cache tier answered the scale reads, in their measured windows.
fn print_tiers(runs: &Runs) {
    let mut shown = false;
    for (&(w, c), stats) in runs {
        let Some(t) = median_of(stats).cache else {
            continue;
        };
        if !shown {
            println!(
                "\nCache tiers in the measured window (users read; a batch counts each id; all runs)"
            );
            println!(
                "{:<20} {:>5} {:>12} {:>8} {:>8} {:>8}",
                "workload", "conc", "users read", "local", "redis", "miss"
            );
            shown = true;
        }
        let pct = |i: usize| {
            t.percentages()
                .map_or("-".to_owned(), |p| format!("{:.1}%", p[i]))
        };
        println!(
            "{:<20} {:>5} {:>12} {:>8} {:>8} {:>8}",
            w.name(),
            c,
            t.local + t.redis + t.misses,
            pct(0),
            pct(1),
            pct(2)
        );
    }
}

pub fn runs_json(runs: &Runs, n_runs: usize) -> Value {
    let rows: Vec<Value> = runs
        .iter()
        .map(|(&(w, c), stats)| {
            let m = median_of(stats);
            let mut row = m.json();
            row["workload"] = json!(w.name());
            row["concurrency"] = json!(c);
            row["ceiling"] = json!(w.ceiling().map(Workload::name));
            row["ratio"] = ratio(runs, w, c).map_or(Value::Null, |r| round(r, 3));
            row["runs"] = Value::Array(stats.iter().map(Stats::json).collect());
            row
        })
        .collect();
    json!({"runs": n_runs, "rows": rows})
}

/// The service's resident memory around the measured load, in MiB.
#[derive(Debug, Default, Clone, Copy)]
pub struct Rss {
    pub idle_before: Option<f64>,
    pub peak: Option<f64>,
    pub idle_after: Option<f64>,
}

impl Rss {
    pub fn print(&self) {
        let mb = |v: Option<f64>| v.map_or("n/a".to_owned(), |v| format!("{v:.1} MiB"));
        println!(
            "\nService RSS: idle after start+seed {}, peak during load {} (sampled every 100 ms), idle after load {} (idle: once it stops falling)",
            mb(self.idle_before),
            mb(self.peak),
            mb(self.idle_after)
        );
    }

    pub fn json(&self) -> Value {
        let mb = |v: Option<f64>| v.map_or(Value::Null, |v| round(v, 1));
        json!({"idleBeforeMiB": mb(self.idle_before), "peakMiB": mb(self.peak),
               "idleAfterMiB": mb(self.idle_after)})
    }
}

/// One point of the soak curve.
#[derive(Debug, Clone, Copy)]
pub struct SoakPoint {
    pub secs: f64,
    pub rss: Option<f64>,
    pub requests: u64,
    pub errors: u64,
}

pub fn print_soak(points: &[SoakPoint], workers: &str) {
    println!("\nSoak ({workers}): RSS every 10 s");
    println!(
        "{:>7} {:>9} {:>12} {:>8}",
        "time s", "RSS MiB", "requests", "errors"
    );
    for p in points {
        let rss = p.rss.map_or("n/a".to_owned(), |r| format!("{r:.1}"));
        println!(
            "{:>7.0} {:>9} {:>12} {:>8}",
            p.secs, rss, p.requests, p.errors
        );
    }
    let rss: Vec<f64> = points.iter().filter_map(|p| p.rss).collect();
    if let (Some(first), Some(last)) = (rss.first(), rss.last()) {
        let max = rss.iter().copied().fold(f64::MIN, f64::max);
        println!("RSS first {first:.1} MiB, last {last:.1} MiB, max {max:.1} MiB");
    }
    if let Some(end) = points.last()
        && end.secs > 0.0
    {
        println!(
            "{:.0} req/s on average, {} errors",
            end.requests as f64 / end.secs,
            end.errors
        );
    }
}

pub fn soak_json(points: &[SoakPoint], workers: &str) -> Value {
    let rss: Vec<f64> = points.iter().filter_map(|p| p.rss).collect();
    json!({
        "workers": workers,
        "points": points.iter().map(|p| json!({
            "secs": round(p.secs, 1), "rssMiB": p.rss.map_or(Value::Null, |r| round(r, 1)),
            "requests": p.requests, "errors": p.errors,
        })).collect::<Vec<_>>(),
        "firstMiB": rss.first().map_or(Value::Null, |v| round(*v, 1)),
        "lastMiB": rss.last().map_or(Value::Null, |v| round(*v, 1)),
        "maxMiB": rss.iter().copied().reduce(f64::max).map_or(Value::Null, |v| round(v, 1)),
    })
}

/// The share of the requests measured apart that were answered 503.
fn share_503(a: &Aside) -> f64 {
    let all: u64 = a.statuses.values().sum();
    let unavailable = a.statuses.get(&503).copied().unwrap_or(0);
    if all == 0 {
        0.0
    } else {
        unavailable as f64 / all as f64
    }
}
