//! The CacheManager actor: keeps this instance's cache coherent with the others. It listens
//! on the invalidation channel (dropping in-process copies as other instances write), checks
//! Redis every second (not while Redis' breaker is open: its probe does, and the subscription
//! is kept for when Redis answers again), redelivers invalidations Redis missed, and reports
//! to health. It is supervised: if it dies, the in-process copy is off (its listener's guard
//! sees to that) until a new one has subscribed again.

use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, ActorFutureExt, AsyncContext, Context, WrapFuture};
use deadpool_redis::redis;
use futures::StreamExt;
use tokio::sync::{Notify, watch};

use super::{Inner, UserCache};
use crate::health::{Health, Report, Status};
use crate::retry::Backoff;
use user_domain::UserId;

const TICK: Duration = Duration::from_secs(1);
/// Failed checks in a row before the subscription is presumed dead and reopened.
const FAILED_CHECKS: u32 = 3;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the liveness check waits for Redis.
const CHECK_TIMEOUT: Duration = Duration::from_secs(1);

pub struct CacheManager {
    cache: UserCache,
    redis_url: String,
    health: Health,
    stop: watch::Receiver<bool>,
    reconnect: Arc<Notify>,
    failed_checks: u32,
}

impl CacheManager {
    pub fn new(
        cache: UserCache,
        redis_url: String,
        health: Health,
        stop: watch::Receiver<bool>,
    ) -> Self {
        Self {
            cache,
            redis_url,
            health,
            stop,
            reconnect: Arc::new(Notify::new()),
            failed_checks: 0,
        }
    }
}

impl Actor for CacheManager {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let Some(inner) = self.cache.inner.clone() else {
            return;
        };
        let listen = listen(
            inner.clone(),
            self.redis_url.clone(),
            self.health.clone(),
            self.stop.clone(),
            self.reconnect.clone(),
        );
        ctx.spawn(listen.into_actor(self));
        ctx.run_interval(TICK, move |act, ctx| {
            inner.sweep();
            if !inner.redis.breaker().allows() {
                return;
            }
            let inner = inner.clone();
            let check = async move {
                // Lenient: a busy instance answers its requests late, which is no reason to
                // drop the subscription (and with it the in-process copy).
                let ping = async |c: &mut _| redis::cmd("PING").query_async::<String>(c).await;
                let up = inner
                    .run_within("PING", CHECK_TIMEOUT, ping)
                    .await
                    .is_some();
                up && inner.deliver_unclean().await
            };
            ctx.spawn(check.into_actor(act).map(|up, act, _| {
                act.failed_checks = if up { 0 } else { act.failed_checks + 1 };
                if act.failed_checks == FAILED_CHECKS {
                    act.reconnect.notify_waiters();
                }
            }));
        });
    }
}

/// Follows the invalidation channel until `stop`, reconnecting with backoff. The in-process
/// copy is on only while subscribed.
async fn listen(
    cache: Arc<Inner>,
    url: String,
    health: Health,
    mut stop: watch::Receiver<bool>,
    reconnect: Arc<Notify>,
) {
    let report = |status, detail: Option<String>| {
        health.report(Report::new("redis", status, detail));
    };
    let client = match redis::Client::open(url) {
        Ok(c) => c,
        Err(e) => {
            report(Status::Down, Some(format!("REDIS_URL: {e}")));
            return;
        }
    };
    let channel = cache.channel();
    let _off = ListeningOff {
        cache: cache.clone(),
        health: health.clone(),
    };
    let mut backoff = Backoff::reconnect();
    loop {
        let subscribe = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        let problem = match tokio::time::timeout(CONNECT_TIMEOUT, subscribe).await {
            Ok(Ok(mut pubsub)) => {
                cache.set_listening(true);
                report(Status::Up, None);
                backoff.reset();
                let mut messages = pubsub.on_message();
                loop {
                    tokio::select! {
                        message = messages.next() => match message {
                            Some(m) => {
                                if let Some(id) = invalidated_user(m.get_payload_bytes()) {
                                    cache.drop_local(id);
                                }
                            }
                            None => break,
                        },
                        () = reconnect.notified() => break,
                        _ = stop.wait_for(|s| *s) => return,
                    }
                }
                cache.set_listening(false);
                "invalidation subscription lost".to_owned()
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {CONNECT_TIMEOUT:?}"),
        };
        tracing::warn!(error = %problem, "Redis cache unavailable; reads go to the database");
        report(Status::Down, Some(problem));
        if !backoff.wait(&mut stop).await {
            return;
        }
    }
}

/// However the listener ends (the service stops, the manager panics or stops), the
/// in-process copy is off: without the subscription it could serve a stale user.
struct ListeningOff {
    cache: Arc<Inner>,
    health: Health,
}

impl Drop for ListeningOff {
    fn drop(&mut self) {
        self.cache.set_listening(false);
        let detail = "the cache manager is not listening".to_owned();
        self.health
            .report(Report::new("redis", Status::Down, Some(detail)));
    }
}

/// `{"userId": "…"}`
fn invalidated_user(payload: &[u8]) -> Option<UserId> {
    #[derive(serde::Deserialize)]
    struct Message {
        #[serde(rename = "userId")]
        user_id: UserId,
    }
    serde_json::from_slice::<Message>(payload)
        .ok()
        .map(|m| m.user_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_user_of_an_invalidation() {
        let id = UserId::generate();
        let payload = serde_json::json!({ "userId": id }).to_string();
        assert_eq!(invalidated_user(payload.as_bytes()), Some(id));
        assert_eq!(invalidated_user(b"{\"userId\": \"nope\"}"), None);
        assert_eq!(invalidated_user(b"not json"), None);
    }
}
