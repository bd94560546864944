//! How each integration is doing. Parts write their reports straight into [`Health`], and
//! `/health` reads it there: no mailbox on either way, so nothing waits for an actor, and no
//! report is lost while the HealthMonitor restarts. The [`HealthMonitor`] actor owns the
//! periodic checks no other part makes on its own (the outbox's backlog, [`outbox`]).

mod outbox;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use actix::{Actor, AsyncContext, Context, WrapFuture};
use serde::Serialize;
use sqlx::PgPool;
use tokio::sync::watch;

use user_domain::Timestamp;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Up,
    Degraded,
    Down,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Component {
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// When the status last changed.
    pub since: Timestamp,
    /// Numbers that describe the part (`outboxPending`, `oldestPendingSeconds`…).
    #[serde(flatten)]
    pub figures: Figures,
}

pub type Figures = BTreeMap<&'static str, serde_json::Value>;

pub type Components = BTreeMap<&'static str, Component>;

/// Every part's last report; outlives any one HealthMonitor. Cheap to clone.
#[derive(Clone, Default)]
pub struct Health(Arc<Mutex<Components>>);

impl Health {
    /// Keeps `r` as its part's current state; never waits (a short lock, no I/O).
    pub fn report(&self, r: Report) {
        let mut components = self.lock();
        let since = match components.get(r.component) {
            Some(c) if c.status == r.status => c.since,
            _ => {
                tracing::info!(component = r.component, status = ?r.status, detail = ?r.detail, "health changed");
                Timestamp::now()
            }
        };
        let c = Component {
            status: r.status,
            detail: r.detail,
            since,
            figures: r.figures,
        };
        components.insert(r.component, c);
    }

    /// Every part's state, by name.
    pub fn snapshot(&self) -> Components {
        self.lock().clone()
    }

    fn lock(&self) -> MutexGuard<'_, Components> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A part's current state.
pub struct Report {
    pub component: &'static str,
    pub status: Status,
    pub detail: Option<String>,
    pub figures: Figures,
}

impl Report {
    pub fn new(component: &'static str, status: Status, detail: Option<String>) -> Self {
        Self {
            component,
            status,
            detail,
            figures: Figures::new(),
        }
    }
}

/// Runs the periodic checks in its context: they die with it, and its supervisor starts
/// them again with the next monitor. Every instance checks (the outbox is shared), whether
/// it publishes or not.
pub struct HealthMonitor {
    health: Health,
    pool: PgPool,
    stop: watch::Receiver<bool>,
}

impl HealthMonitor {
    /// A monitor that reports into `health` (shared with the monitor it replaces).
    pub fn new(health: Health, pool: PgPool, stop: watch::Receiver<bool>) -> Self {
        Self { health, pool, stop }
    }
}

impl Actor for HealthMonitor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let check = outbox::check(self.pool.clone(), self.health.clone(), self.stop.clone());
        ctx.spawn(check.into_actor(self));
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use actix::Arbiter;

    use super::*;
    use crate::fault::Crash;
    use crate::supervisor::Supervision;

    #[test]
    fn keeps_the_latest_report_and_when_it_changed() {
        let health = Health::default();
        let report = |status| Report::new("rabbitmq", status, None);
        health.report(report(Status::Down));
        let first = health.snapshot()["rabbitmq"].clone();
        health.report(report(Status::Down));
        let same = health.snapshot()["rabbitmq"].clone();
        assert_eq!(first.since, same.since, "a repeated status keeps its start");
        health.report(report(Status::Up));
        assert_eq!(health.snapshot()["rabbitmq"].status, Status::Up);
    }

    /// A report made while the monitor is dead is there once it is back, and so is what was
    /// reported before.
    #[actix::test]
    async fn a_report_made_while_the_monitor_is_down_is_not_lost() {
        let health = Health::default();
        // A database without an outbox: the monitor's own check finds nothing to report.
        let pool = PgPool::connect_lazy("postgres://postgres@127.0.0.1:5432/postgres").unwrap();
        let (_stop, stopped) = watch::channel(false);
        let actors = Supervision::new(Arbiter::current(), stopped.clone());
        let shared = health.clone();
        let monitor = actors.start("healthMonitor", move || {
            HealthMonitor::new(shared.clone(), pool.clone(), stopped.clone())
        });
        health.report(Report::new("redis", Status::Up, None));

        let first = monitor.addr();
        assert!(
            first.send(Crash::InHandler).await.is_err(),
            "the crash kills it"
        );
        assert!(!monitor.addr().connected(), "down while the report is made");
        health.report(Report::new("rabbitmq", Status::Down, Some("gone".into())));

        let back = monitor.ready(Duration::from_secs(5)).await;
        assert!(back.is_some_and(|a| a.connected()), "restarted within 5 s");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let seen = loop {
            let now = health.snapshot();
            if now.contains_key("rabbitmq") || tokio::time::Instant::now() >= deadline {
                break now;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert_eq!(seen["rabbitmq"].status, Status::Down);
        assert_eq!(seen["rabbitmq"].detail.as_deref(), Some("gone"));
        assert_eq!(seen["redis"].status, Status::Up);
        assert_eq!(actors.states()["healthMonitor"].restarts, 1);
    }
}
