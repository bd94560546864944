//! Test-only fault injection (cargo feature `fault-injection`): a [`Crash`] message that makes
//! any of the supervised actors panic, the way a bug would.

use actix::{Actor, AsyncContext, Context, Handler, Message, fut};

use crate::cache::CacheManager;
use crate::health::HealthMonitor;
use crate::limits::RateLimiter;
use crate::publisher::EventPublisher;
use crate::store::UserStore;

#[derive(Message, Debug, Clone, Copy, PartialEq, Eq)]
#[rtype(result = "()")]
pub enum Crash {
    /// Panics in the handler of this message.
    InHandler,
    /// Panics in a future spawned in the actor's context, where its run loops (listeners,
    /// intervals) are polled: as a panic inside a run loop does.
    InRunLoop,
}

/// A request with this correlation id panics on the edge's task, inside `Core::call`, as a
/// bug in request handling would.
pub const PANIC_CORRELATION_ID: &str = "fault-injection:panic";

pub fn panic_if_asked(correlation_id: &str) {
    if correlation_id == PANIC_CORRELATION_ID {
        panic!("injected fault: a request handler panicked");
    }
}

/// A write (other than a create) with this correlation id panics on its own task in the
/// worker pool, inside the store, as a bug in an operation would.
pub const PANIC_IN_WRITE_CORRELATION_ID: &str = "fault-injection:panic-in-write";

pub fn panic_in_write_if_asked(correlation_id: &str) {
    if correlation_id == PANIC_IN_WRITE_CORRELATION_ID {
        panic!("injected fault: a write panicked");
    }
}

fn crash<A: Actor<Context = Context<A>>>(crash: Crash, ctx: &mut Context<A>) {
    match crash {
        Crash::InHandler => panic!("injected fault: crash in a handler"),
        Crash::InRunLoop => {
            ctx.spawn(fut::wrap_future(async {
                panic!("injected fault: crash in a run loop")
            }));
        }
    }
}

macro_rules! crashable {
    ($($actor:ty),*) => {$(
        impl Handler<Crash> for $actor {
            type Result = ();

            fn handle(&mut self, c: Crash, ctx: &mut Context<Self>) {
                crash(c, ctx);
            }
        }
    )*};
}

crashable!(
    UserStore,
    CacheManager,
    EventPublisher,
    RateLimiter,
    HealthMonitor
);
