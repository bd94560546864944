//! The HealthMonitor actor: the one place that knows how each integration is doing. Parts
//! report changes to it (`do_send`, never waiting); `/health` asks it for a snapshot. What it
//! knows lives in a [`HealthState`] its supervisor's factory hands to every incarnation, so a
//! restarted monitor still knows every part.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use actix::{Actor, Context, Handler, Message, MessageResult};
use serde::Serialize;

use crate::supervisor::ActorHandle;
use user_domain::Timestamp;

/// How the parts reach the (current) HealthMonitor.
pub type Health = ActorHandle<HealthMonitor>;

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
pub struct HealthState(Arc<Mutex<Components>>);

impl HealthState {
    fn lock(&self) -> MutexGuard<'_, Components> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Default)]
pub struct HealthMonitor {
    components: HealthState,
}

impl HealthMonitor {
    /// A monitor that keeps what it learns in `state` (shared with the monitor it replaces).
    pub fn with_state(state: HealthState) -> Self {
        Self { components: state }
    }
}

impl Actor for HealthMonitor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(1024);
    }
}

/// A part's current state.
#[derive(Message)]
#[rtype(result = "()")]
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

impl Handler<Report> for HealthMonitor {
    type Result = ();

    fn handle(&mut self, r: Report, _: &mut Self::Context) {
        let mut components = self.components.lock();
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
}

/// Every part's state, by name.
#[derive(Message)]
#[rtype(result = "Components")]
pub struct Snapshot;

impl Handler<Snapshot> for HealthMonitor {
    type Result = MessageResult<Snapshot>;

    fn handle(&mut self, _: Snapshot, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.components.lock().clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix::test]
    async fn keeps_the_latest_report_and_when_it_changed() {
        let monitor = HealthMonitor::default().start();
        let report = |status| Report::new("rabbitmq", status, None);
        monitor.do_send(report(Status::Down));
        let first = monitor.send(Snapshot).await.unwrap()["rabbitmq"].clone();
        monitor.do_send(report(Status::Down));
        let same = monitor.send(Snapshot).await.unwrap()["rabbitmq"].clone();
        assert_eq!(first.since, same.since, "a repeated status keeps its start");
        monitor.do_send(report(Status::Up));
        let now = monitor.send(Snapshot).await.unwrap();
        assert_eq!(now["rabbitmq"].status, Status::Up);
    }

    #[actix::test]
    async fn a_new_monitor_on_the_same_state_knows_what_the_old_one_did() {
        let state = HealthState::default();
        let old = HealthMonitor::with_state(state.clone()).start();
        old.do_send(Report::new("redis", Status::Down, Some("gone".into())));
        let before = old.send(Snapshot).await.unwrap();
        let new = HealthMonitor::with_state(state).start();
        assert_eq!(new.send(Snapshot).await.unwrap(), before);
        assert_eq!(before["redis"].status, Status::Down);
    }
}
