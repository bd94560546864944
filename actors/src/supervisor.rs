//! Restart-on-death for actors. actix's `Supervisor` restarts an actor that stops itself,
//! but a panic in a handler kills the actor for good; [`Restarting`] notices the closed
//! mailbox on the next call and starts a fresh actor in its place.

use std::sync::{Arc, RwLock};

use actix::{Actor, Addr, ArbiterHandle, Context};

type Factory<A> = Arc<dyn Fn() -> A + Send + Sync>;

pub struct Restarting<A: Actor<Context = Context<A>>> {
    current: RwLock<Addr<A>>,
    arbiter: ArbiterHandle,
    make: Factory<A>,
    name: &'static str,
}

impl<A: Actor<Context = Context<A>>> Restarting<A> {
    /// Starts the actor on `arbiter`; restarts happen on the same arbiter.
    pub fn start(
        name: &'static str,
        arbiter: ArbiterHandle,
        make: impl Fn() -> A + Send + Sync + 'static,
    ) -> Self {
        let make: Factory<A> = Arc::new(make);
        let current = RwLock::new(spawn(&arbiter, &make));
        Self {
            current,
            arbiter,
            make,
            name,
        }
    }

    /// A live address: the current actor's, or a new actor's if the current one died.
    pub fn addr(&self) -> Addr<A> {
        if let Ok(addr) = self.current.read()
            && addr.connected()
        {
            return addr.clone();
        }
        let mut slot = match self.current.write() {
            Ok(slot) => slot,
            Err(poisoned) => poisoned.into_inner(),
        };
        if !slot.connected() {
            tracing::error!(actor = self.name, "actor died; starting a new one");
            *slot = spawn(&self.arbiter, &self.make);
        }
        slot.clone()
    }
}

fn spawn<A: Actor<Context = Context<A>>>(arbiter: &ArbiterHandle, make: &Factory<A>) -> Addr<A> {
    let make = make.clone();
    A::start_in_arbiter(arbiter, move |_| make())
}
