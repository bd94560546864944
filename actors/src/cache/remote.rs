//! The Redis tier: its keys, its round trips (each bounded, a failure a miss), and the
//! delivery of invalidations to every instance, with the retry of those Redis missed.

use std::sync::atomic::Ordering;
use std::time::Duration;

use deadpool_redis::redis;
use tracing::Instrument;

use super::{Inner, scripts};
use crate::redis::Failure;
use user_domain::{Email, UserId};

/// Most time a Redis call may take before the cache gives up on it (a miss).
const REDIS_TIMEOUT: Duration = Duration::from_millis(100);
/// How long an invalidation marker lives; fills of reads older than this are dropped.
const MARKER_TTL: Duration = Duration::from_secs(60);

impl Inner {
    pub(super) fn user_key(&self, id: UserId) -> String {
        format!("{}:user:{id}", self.prefix)
    }

    pub(super) fn email_key(&self, email: &Email) -> String {
        format!("{}:email:{email}", self.prefix)
    }

    pub(super) fn marker_key(&self, id: UserId) -> String {
        format!("{}:written:{id}", self.prefix)
    }

    pub(super) fn channel(&self) -> String {
        format!("{}:cache:invalidate", self.prefix)
    }

    /// `MGET` of `keys` and Redis' clock, in one round trip.
    pub(super) async fn mget(&self, keys: &[String]) -> Option<(Vec<Option<String>>, u64)> {
        let mut pipe = redis::pipe();
        pipe.cmd("MGET").arg(keys).cmd("TIME");
        let (values, (secs, micros)): (Vec<Option<String>>, (u64, u64)) = self
            .run("MGET", async |conn| pipe.query_async(conn).await)
            .await?;
        Some((values, secs * 1_000_000 + micros))
    }

    /// Deletes the user's keys, leaves the marker, and tells every instance.
    pub(super) async fn deliver(&self, users: &[(UserId, Vec<Email>)]) -> bool {
        let mut invocation = scripts::INVALIDATE.prepare_invoke();
        invocation
            .arg(MARKER_TTL.as_millis() as u64)
            .arg(self.channel());
        for (id, emails) in users {
            invocation.key(self.marker_key(*id)).key(self.user_key(*id));
            for e in emails {
                invocation.key(self.email_key(e));
            }
            invocation
                .arg(1 + emails.len())
                .arg(serde_json::json!({ "userId": id }).to_string());
        }
        let done: Option<i64> = self
            .run("EVALSHA invalidate", async |conn| {
                invocation.invoke_async(conn).await
            })
            .await;
        done.is_some()
    }

    /// Deletes every user and address key of this prefix, after too many missed
    /// invalidations; true when done.
    pub(super) async fn purge(&self) -> bool {
        for kind in ["user", "email"] {
            let pattern = format!("{}:{kind}:*", self.prefix);
            let mut cursor: u64 = 0;
            loop {
                let scan = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .to_owned();
                let Some((next, keys)): Option<(u64, Vec<String>)> =
                    self.run("SCAN", async |c| scan.query_async(c).await).await
                else {
                    return false;
                };
                if !keys.is_empty() {
                    let del = redis::cmd("DEL").arg(&keys).to_owned();
                    if self
                        .run("DEL", async |c| del.query_async::<i64>(c).await)
                        .await
                        .is_none()
                    {
                        return false;
                    }
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        self.purge.store(false, Ordering::Release);
        tracing::info!("cache keys purged after missed invalidations");
        true
    }

    /// Retries the invalidations Redis missed; true when none is left.
    pub(super) async fn deliver_unclean(&self) -> bool {
        if self.purge.load(Ordering::Acquire) && !self.purge().await {
            return false;
        }
        let pending: Vec<(UserId, Vec<Email>)> = {
            let unclean = self.unclean.lock().unwrap_or_else(|p| p.into_inner());
            unclean.iter().map(|(id, e)| (*id, e.clone())).collect()
        };
        for (id, emails) in pending {
            if !self.deliver(&[(id, emails.clone())]).await {
                return false;
            }
            let mut unclean = self.unclean.lock().unwrap_or_else(|p| p.into_inner());
            // A write that failed meanwhile added addresses: keep those for the next round.
            if unclean
                .get(&id)
                .is_some_and(|now| now.len() == emails.len())
            {
                unclean.remove(&id);
            }
        }
        true
    }

    /// One Redis call with the cache's timeout; any failure is `None`. `command` names its
    /// span for an exporter.
    pub(super) async fn run<T>(
        &self,
        command: &'static str,
        call: impl AsyncFnOnce(&mut crate::redis::Connection) -> redis::RedisResult<T>,
    ) -> Option<T> {
        self.run_within(command, REDIS_TIMEOUT, call).await
    }

    /// [`Self::run`] with another timeout. While the breaker is open nothing is asked, and
    /// that is no error: `redisErrors` counts calls that were made and failed.
    pub(super) async fn run_within<T>(
        &self,
        command: &'static str,
        limit: Duration,
        call: impl AsyncFnOnce(&mut crate::redis::Connection) -> redis::RedisResult<T>,
    ) -> Option<T> {
        // Only a request's calls: the background's would each start a trace of their own.
        let span = match crate::telemetry::exporting() && !tracing::Span::current().is_none() {
            true => crate::otel_span!(
                "redis",
                otel.name = command,
                otel.kind = "client",
                db.system = "redis",
                db.operation.name = command,
            ),
            false => tracing::Span::none(),
        };
        match self.redis.call(limit, call).instrument(span).await {
            Ok(v) => Some(v),
            Err(Failure::Open) => None,
            Err(error) => {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%error, "redis call failed; treated as a miss");
                None
            }
        }
    }
}
