//! The CPU a measured window took: the service's own (the run time of its threads,
//! `/proc/PID/task/*/schedstat`) and the whole machine's (`/proc/stat`, the bench's client
//! and PostgreSQL included), reported per request. A rate moves with the VM's hour by a
//! fifth or more; the CPU a request costs moves far less, so it is what shows a saving of a
//! few per cent on a request path.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

/// CPU spent in a window, in nanoseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Spent {
    /// The service's threads (none when the bench does not know its process).
    pub service: Option<u64>,
    /// Every core, busy.
    pub machine: Option<u64>,
}

impl Spent {
    /// Per request, in µs: `(service, machine)`.
    pub fn per_request(&self, requests: u64) -> (Option<f64>, Option<f64>) {
        let per = |ns: Option<u64>| {
            ns.filter(|_| requests > 0)
                .map(|ns| ns as f64 / 1e3 / requests as f64)
        };
        (per(self.service), per(self.machine))
    }
}

/// Reads the CPU counters at `from` and at `until` (the measured window); what they grew by.
pub fn watch(pid: Option<u32>, from: Instant, until: Instant) -> tokio::task::JoinHandle<Spent> {
    tokio::spawn(async move {
        tokio::time::sleep_until(from).await;
        let before = (pid.and_then(threads_ns), machine_ns());
        tokio::time::sleep_until(until).await;
        let after = (pid.and_then(threads_ns), machine_ns());
        // A thread that ended in the window takes its time with it (the service's workers
        // live as long as it does); one that began in it counts from zero.
        let service = before.0.zip(after.0).map(|(b, a)| {
            a.iter()
                .map(|(tid, ns)| ns.saturating_sub(b.get(tid).copied().unwrap_or(0)))
                .sum()
        });
        let machine = before.1.zip(after.1).map(|(b, a)| a.saturating_sub(b));
        Spent { service, machine }
    })
}

/// The run time of each thread of `pid` so far, by thread id.
fn threads_ns(pid: u32) -> Option<HashMap<String, u64>> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut threads = HashMap::new();
    for task in tasks.flatten() {
        let stat = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
        let ns: u64 = stat
            .split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        threads.insert(task.file_name().to_string_lossy().into_owned(), ns);
    }
    Some(threads)
}

/// The busy time of every core so far.
fn machine_ns() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal: busy is user to system, irq and
    // softirq (guest time is inside user's; stolen time was not ours).
    let busy: u64 = [0, 1, 2, 5, 6].iter().filter_map(|&i| ticks.get(i)).sum();
    // SAFETY: sysconf reads a constant of the system; it has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let tick = Duration::from_secs(1) / u32::try_from(hz).ok().filter(|h| *h > 0)?;
    u64::try_from(tick.as_nanos()).ok()?.checked_mul(busy)
}
