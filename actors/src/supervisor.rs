//! Supervision that survives panics. actix's own `Supervisor` restarts only an actor that
//! stops itself; a panic in a handler (or in a future spawned in its context, where the run
//! loops live) ends the actor for good. Here every actor runs under an [`ActorHandle`]: the
//! supervisor holds the task that runs the actor's context, so it learns of the death at
//! once (a panic, with its message, or a stop), and starts a new actor from the factory on
//! the same arbiter after a [`Backoff`] that grows while the actor keeps failing and starts
//! over once it has stayed up for [`STABLE_AFTER`]. Nothing restarts once the service stops.
//!
//! Each supervisor writes its actor's state into the [`Supervision`] registry, which `/health`
//! reads directly, so the state is known even while the HealthMonitor is the one restarting.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use actix::dev::{ToEnvelope, channel};
use actix::{Actor, Addr, ArbiterHandle, Context, Handler, Message};
use serde::Serialize;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::retry::Backoff;
use user_domain::Timestamp;

/// The first restart waits this long (plus jitter); each further failure doubles it…
const FIRST_RESTART: Duration = Duration::from_millis(100);
/// …up to this.
const MAX_RESTART: Duration = Duration::from_secs(5);
/// An actor that stayed up this long is well again: its next failure waits the shortest time.
pub const STABLE_AFTER: Duration = Duration::from_secs(10);
/// actix's default mailbox size; actors raise it in `started` where they need to.
const MAILBOX: usize = 16;
/// Panic messages are cut to this many characters in `/health`.
const MAX_REASON: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ActorStatus {
    Up,
    /// Dead, waiting out its backoff before the next start.
    Restarting,
    /// Not restarted: the service is stopping (or its arbiter is gone).
    Stopped,
}

/// What `/health` shows of one actor.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ActorState {
    pub status: ActorStatus,
    /// When the status last changed.
    pub since: Timestamp,
    pub restarts: u64,
    /// How the last one ended (`panicked: …`, `stopped`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_exit: Option<String>,
}

type States = Arc<Mutex<BTreeMap<&'static str, ActorState>>>;
type Factory<A> = Arc<dyn Fn() -> A + Send + Sync>;

/// Starts supervised actors on one arbiter and keeps their states. Cheap to clone.
#[derive(Clone)]
pub struct Supervision {
    arbiter: ArbiterHandle,
    /// Turns true when the service stops: dead actors then stay dead.
    stop: watch::Receiver<bool>,
    states: States,
}

impl Supervision {
    pub fn new(arbiter: ArbiterHandle, stop: watch::Receiver<bool>) -> Self {
        Self {
            arbiter,
            stop,
            states: States::default(),
        }
    }

    /// Starts `make()` as the actor `name` and restarts it from `make` whenever it dies.
    pub fn start<A>(
        &self,
        name: &'static str,
        make: impl Fn() -> A + Send + Sync + 'static,
    ) -> ActorHandle<A>
    where
        A: Actor<Context = Context<A>>,
    {
        let make: Factory<A> = Arc::new(make);
        let (addr, task) = launch(&self.arbiter, &make);
        let current = Arc::new(watch::Sender::new(addr));
        let status = match task {
            Some(task) => {
                let watcher = supervise(self.clone(), name, make, current.clone(), task);
                if self.arbiter.spawn(watcher) {
                    ActorStatus::Up
                } else {
                    ActorStatus::Stopped
                }
            }
            None => ActorStatus::Stopped,
        };
        if status == ActorStatus::Stopped {
            tracing::error!(actor = name, "arbiter is gone; actor not started");
        }
        self.record(name, |s| s.status = status);
        ActorHandle { name, current }
    }

    /// Every supervised actor's state, by name.
    pub fn states(&self) -> BTreeMap<&'static str, ActorState> {
        self.states
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn record(&self, name: &'static str, change: impl FnOnce(&mut ActorState)) {
        let mut states = self.states.lock().unwrap_or_else(PoisonError::into_inner);
        let state = states.entry(name).or_insert_with(|| ActorState {
            status: ActorStatus::Up,
            since: Timestamp::now(),
            restarts: 0,
            last_exit: None,
        });
        let before = state.status;
        change(state);
        if state.status != before {
            state.since = Timestamp::now();
        }
    }
}

/// The way to a supervised actor: always its current incarnation. Cheap to clone.
pub struct ActorHandle<A: Actor<Context = Context<A>>> {
    name: &'static str,
    current: Arc<watch::Sender<Addr<A>>>,
}

impl<A: Actor<Context = Context<A>>> Clone for ActorHandle<A> {
    fn clone(&self) -> Self {
        Self {
            name: self.name,
            current: self.current.clone(),
        }
    }
}

impl<A: Actor<Context = Context<A>>> std::fmt::Debug for ActorHandle<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActorHandle")
            .field("name", &self.name)
            .field("connected", &self.addr().connected())
            .finish()
    }
}

impl<A: Actor<Context = Context<A>>> ActorHandle<A> {
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The current actor's address; while it is dead (and not yet restarted), its mailbox
    /// is closed and sends fail.
    pub fn addr(&self) -> Addr<A> {
        self.current.borrow().clone()
    }

    /// A live address, waiting up to `patience` for a restart if the actor is dead.
    pub async fn ready(&self, patience: Duration) -> Option<Addr<A>> {
        let addr = self.addr();
        if addr.connected() {
            return Some(addr);
        }
        let mut next = self.current.subscribe();
        let live = async move { next.wait_for(Addr::connected).await.map(|a| a.clone()) };
        tokio::time::timeout(patience, live).await.ok()?.ok()
    }

    /// Sends without waiting for an answer; lost if the actor is dead at the moment.
    pub fn do_send<M>(&self, msg: M)
    where
        M: Message + Send + 'static,
        M::Result: Send,
        A: Handler<M>,
        A::Context: ToEnvelope<A, M>,
    {
        self.addr().do_send(msg);
    }
}

/// The task that runs an actor's context; its end is the actor's death.
type Running = oneshot::Receiver<JoinHandle<()>>;

/// Starts one actor on `arbiter`, as `Actor::start_in_arbiter` does, but keeps its task.
/// `None` when the arbiter is gone.
fn launch<A>(arbiter: &ArbiterHandle, make: &Factory<A>) -> (Addr<A>, Option<Running>)
where
    A: Actor<Context = Context<A>>,
{
    let (tx, rx) = channel::channel(MAILBOX);
    let (task_tx, task_rx) = oneshot::channel();
    let make = make.clone();
    let spawned = arbiter.spawn_fn(move || {
        let context = Context::with_receiver(rx);
        let task = actix::spawn(context.into_future(make()));
        let _ = task_tx.send(task);
    });
    (Addr::new(tx), spawned.then_some(task_rx))
}

/// Waits for each incarnation's death and starts the next, until the service stops.
async fn supervise<A>(
    sup: Supervision,
    name: &'static str,
    make: Factory<A>,
    current: Arc<watch::Sender<Addr<A>>>,
    mut running: Running,
) where
    A: Actor<Context = Context<A>>,
{
    let mut stop = sup.stop.clone();
    let mut backoff = Backoff::new(FIRST_RESTART, MAX_RESTART);
    loop {
        let started = Instant::now();
        let exit = exit_of(running).await;
        if *stop.borrow() {
            sup.record(name, |s| {
                s.status = ActorStatus::Stopped;
                s.last_exit = Some(exit);
            });
            return;
        }
        tracing::error!(actor = name, exit = %exit, "actor died; restarting it");
        sup.record(name, |s| {
            s.status = ActorStatus::Restarting;
            s.restarts += 1;
            s.last_exit = Some(exit);
        });
        if started.elapsed() >= STABLE_AFTER {
            backoff.reset();
        }
        if !backoff.wait(&mut stop).await {
            sup.record(name, |s| s.status = ActorStatus::Stopped);
            return;
        }
        let (addr, next) = launch(&sup.arbiter, &make);
        let Some(next) = next else {
            tracing::error!(actor = name, "arbiter is gone; actor not restarted");
            sup.record(name, |s| s.status = ActorStatus::Stopped);
            return;
        };
        current.send_replace(addr);
        sup.record(name, |s| s.status = ActorStatus::Up);
        tracing::info!(actor = name, "actor restarted");
        running = next;
    }
}

/// How an incarnation ended.
async fn exit_of(running: Running) -> String {
    let Ok(task) = running.await else {
        return "failed to start (its factory panicked)".to_owned();
    };
    match task.await {
        Ok(()) => "stopped".to_owned(),
        Err(e) if e.is_panic() => {
            let payload = e.into_panic();
            let text = payload
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
                .unwrap_or("(not a string)");
            format!(
                "panicked: {}",
                text.chars().take(MAX_REASON).collect::<String>()
            )
        }
        Err(_) => "cancelled".to_owned(),
    }
}

#[cfg(test)]
mod tests;
