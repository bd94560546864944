//! What becomes of an event the publisher could not deliver: set aside as dead when it can
//! never be encoded, or retried after a growing delay of its own when the broker refused it.

use std::time::Duration;

use sqlx::PgPool;

use super::{MAX_ATTEMPTS, RetrySchedule};
use crate::metrics::DeadReason;

/// Marks events that can never be encoded as dead, each with its reason; no retry.
pub(super) async fn set_aside(pool: &PgPool, events: &[(i64, String)]) -> Result<(), sqlx::Error> {
    if events.is_empty() {
        return Ok(());
    }
    let (ids, reasons): (Vec<i64>, Vec<&str>) =
        events.iter().map(|(id, r)| (*id, r.as_str())).unzip();
    sqlx::query(
        "UPDATE outbox o SET dead_at = now(), last_error = 'cannot be encoded: ' || d.reason
           FROM UNNEST($1::int8[], $2::text[]) AS d(id, reason) WHERE o.id = d.id",
    )
    .bind(&ids)
    .bind(&reasons)
    .execute(pool)
    .await?;
    for (id, reason) in events {
        tracing::error!(outbox_id = id, %reason, "an event cannot be encoded; set aside as dead");
    }
    crate::metrics::record_dead_events(DeadReason::Unencodable, events.len() as u64);
    Ok(())
}

/// Counts a refusal; the event is tried again after its own growing delay, or is dead after
/// [`MAX_ATTEMPTS`].
pub(super) async fn retry_later(
    pool: &PgPool,
    schedule: RetrySchedule,
    id: i64,
    attempts: i32,
) -> Result<(), sqlx::Error> {
    let attempts: i32 = sqlx::query_scalar(
        "UPDATE outbox SET attempts = attempts + 1, last_error = 'refused by the broker',
                dead_at = CASE WHEN attempts + 1 >= $2 THEN now() END,
                next_attempt_at = CASE WHEN attempts + 1 < $2 THEN now() + make_interval(secs => $3) END
          WHERE id = $1 RETURNING attempts",
    )
    .bind(id)
    .bind(MAX_ATTEMPTS)
    .bind(retry_delay(schedule, attempts.saturating_add(1)).as_secs_f64())
    .fetch_one(pool)
    .await?;
    let dead = attempts >= MAX_ATTEMPTS;
    tracing::warn!(
        outbox_id = id,
        attempts,
        dead,
        "the broker refused an event"
    );
    if dead {
        crate::metrics::record_dead_events(DeadReason::Refused, 1);
    }
    Ok(())
}

/// How long until the earliest refused event may be tried again, if one waits.
pub(super) async fn next_retry_in(pool: &PgPool) -> Result<Option<Duration>, sqlx::Error> {
    let seconds: Option<f64> = sqlx::query_scalar(
        "SELECT EXTRACT(EPOCH FROM min(next_attempt_at) - now())::float8 FROM outbox
          WHERE published_at IS NULL AND dead_at IS NULL AND next_attempt_at IS NOT NULL",
    )
    .fetch_one(pool)
    .await?;
    Ok(seconds.map(|s| Duration::try_from_secs_f64(s).unwrap_or(Duration::ZERO)))
}

/// The wait after an event's `refusals`-th refusal: `first`, doubling each time, at most
/// `max`.
pub(super) fn retry_delay(schedule: RetrySchedule, refusals: i32) -> Duration {
    let doublings = refusals.saturating_sub(1).clamp(0, 20).unsigned_abs();
    schedule
        .first
        .saturating_mul(1 << doublings)
        .min(schedule.max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_double_up_to_the_cap() {
        let schedule = RetrySchedule::default();
        let delays: Vec<Duration> = (1..MAX_ATTEMPTS)
            .map(|n| retry_delay(schedule, n))
            .collect();
        assert_eq!(delays[0], Duration::from_millis(100));
        assert_eq!(delays[1], Duration::from_millis(200));
        assert!(delays.windows(2).all(|w| w[0] <= w[1]), "{delays:?}");
        assert_eq!(delays.last(), Some(&Duration::from_secs(10)));
        let total: Duration = delays.iter().sum();
        assert!(
            total < Duration::from_secs(60),
            "dead within a minute: {total:?}"
        );
        for odd in [i32::MIN, -1, 0, i32::MAX] {
            assert!(retry_delay(schedule, odd) <= schedule.max);
        }
    }
}
