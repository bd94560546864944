//! The supervisor with a toy actor that can be made to fail in each way an actor can.

use std::sync::atomic::{AtomicU32, Ordering};

use actix::{ActorContext, Arbiter, AsyncContext, fut};

use super::*;

/// Counts its incarnations; `Ping` answers which one it is.
struct Toy {
    starts: Arc<AtomicU32>,
    incarnation: u32,
    fail_on_start: bool,
}

impl Actor for Toy {
    type Context = Context<Self>;

    fn started(&mut self, _: &mut Self::Context) {
        self.incarnation = self.starts.fetch_add(1, Ordering::SeqCst) + 1;
        assert!(!self.fail_on_start, "fails as it starts");
    }
}

#[derive(Message)]
#[rtype(result = "u32")]
struct Ping;

impl Handler<Ping> for Toy {
    type Result = u32;
    fn handle(&mut self, _: Ping, _: &mut Self::Context) -> u32 {
        self.incarnation
    }
}

#[derive(Message)]
#[rtype(result = "()")]
enum Fail {
    Panic,
    PanicInSpawned,
    Stop,
}

impl Handler<Fail> for Toy {
    type Result = ();
    fn handle(&mut self, f: Fail, ctx: &mut Self::Context) {
        match f {
            Fail::Panic => panic!("boom in a handler"),
            Fail::PanicInSpawned => {
                ctx.spawn(fut::wrap_future(async { panic!("boom in a loop") }));
            }
            Fail::Stop => ctx.stop(),
        }
    }
}

fn start(fail_on_start: bool) -> (Supervision, ActorHandle<Toy>, watch::Sender<bool>) {
    let (stop, stopped) = watch::channel(false);
    let sup = Supervision::new(Arbiter::current(), stopped);
    let starts = Arc::new(AtomicU32::new(0));
    let toy = sup.start("toy", move || Toy {
        starts: starts.clone(),
        incarnation: 0,
        fail_on_start,
    });
    (sup, toy, stop)
}

/// The second incarnation answers, soon after the first died; returns the state then.
async fn second_incarnation_answers(sup: &Supervision, toy: &ActorHandle<Toy>) -> ActorState {
    let died = Instant::now();
    let addr = toy
        .ready(Duration::from_secs(2))
        .await
        .expect("restarted within 2 s");
    assert_eq!(addr.send(Ping).await.unwrap(), 2);
    assert!(
        died.elapsed() < Duration::from_secs(1),
        "{:?}",
        died.elapsed()
    );
    let state = sup.states()["toy"].clone();
    assert_eq!((state.status, state.restarts), (ActorStatus::Up, 1));
    state
}

#[actix::test]
async fn a_panic_in_a_handler_restarts_the_actor_and_says_why() {
    let (sup, toy, _stop) = start(false);
    assert_eq!(toy.addr().send(Ping).await.unwrap(), 1);
    assert_eq!(sup.states()["toy"].restarts, 0);
    let first = toy.addr();
    assert!(first.send(Fail::Panic).await.is_err());
    assert!(!first.connected());
    let state = second_incarnation_answers(&sup, &toy).await;
    assert_eq!(
        state.last_exit.as_deref(),
        Some("panicked: boom in a handler")
    );
}

#[actix::test]
async fn a_panic_in_a_future_of_its_context_restarts_it_too() {
    let (sup, toy, _stop) = start(false);
    let first = toy.addr();
    first.send(Fail::PanicInSpawned).await.unwrap();
    let state = second_incarnation_answers(&sup, &toy).await;
    assert_eq!(state.last_exit.as_deref(), Some("panicked: boom in a loop"));
    assert!(!first.connected());
}

#[actix::test]
async fn an_actor_that_stops_is_started_again() {
    let (sup, toy, _stop) = start(false);
    toy.do_send(Fail::Stop);
    // Waits for the stop to be handled: the old address closes.
    let old = toy.addr();
    let deadline = Instant::now() + Duration::from_secs(2);
    while old.connected() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let state = second_incarnation_answers(&sup, &toy).await;
    assert_eq!(state.last_exit.as_deref(), Some("stopped"));
}

#[actix::test]
async fn an_actor_that_keeps_failing_is_restarted_ever_more_slowly() {
    let (sup, toy, _stop) = start(true);
    // Waits of 100, 200, 400, 800 ms (each up to twice that): 2 to 4 deaths in the first
    // second, where restarts without a pause would be thousands.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let state = sup.states()["toy"].clone();
    assert!((2..=4).contains(&state.restarts), "{state:?}");
    assert_eq!(
        state.last_exit.as_deref(),
        Some("panicked: fails as it starts")
    );
    assert_ne!(state.status, ActorStatus::Stopped);
    drop(toy);
}

#[actix::test]
async fn nothing_restarts_once_the_service_stops() {
    let (sup, toy, stop) = start(false);
    stop.send_replace(true);
    toy.do_send(Fail::Panic);
    let deadline = Instant::now() + Duration::from_secs(2);
    while sup.states()["toy"].status != ActorStatus::Stopped {
        assert!(Instant::now() < deadline, "{:?}", sup.states());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(sup.states()["toy"].restarts, 0);
    assert!(toy.ready(Duration::from_millis(300)).await.is_none());
}
