//! Group commit of creates. Creates that arrive together share one commit (one WAL flush):
//! one statement inserts their users, events and ledger entries — on its own when none
//! carries a request key, else in a transaction after the keys' locks and lookup. Each keeps
//! its own answer: an address already taken or a request key already used fails that create
//! only. Should the group fail as a whole, each create is done again on its own, so one bad
//! create never fails the others.

use super::db_error;
use std::collections::{HashMap, HashSet};

use serde_json::Value;
use sqlx::types::Json;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::Instrument;

use super::creates::{Insert, insert_users, invalidate_created};
use super::db::Db;
use super::ledger::{self, Keyed};
use crate::metrics;
use user_domain::call::Reply;
use user_domain::error::CoreError;
use user_domain::events::Origin;
use user_domain::{NewUser, User};

/// Most creates in one transaction.
pub(super) const MAX_GROUP: usize = 64;

/// One create waiting for its group.
pub(super) struct Pending {
    pub(super) new: NewUser,
    pub(super) keyed: Option<Keyed>,
    pub(super) corr: Origin,
    pub(super) deadline: Option<Instant>,
    pub(super) answer: oneshot::Sender<Result<Reply, CoreError>>,
    /// The request's span (disabled without an exporter).
    pub(super) span: tracing::Span,
}

impl Pending {
    fn expired(&self) -> bool {
        self.deadline.is_some_and(|at| Instant::now() >= at)
    }

    fn reply(self, result: Result<Reply, CoreError>) {
        // The caller may have gone; its create stands either way.
        let _ = self.answer.send(result);
    }
}

fn too_late() -> CoreError {
    CoreError::Unavailable("deadline passed; nothing was done".to_owned())
}

/// Runs `group` as one commit; on a database failure, each create on its own.
pub(super) async fn create_all(db: Db, group: Vec<Pending>) {
    let mut group = group;
    loop {
        let (late, live): (Vec<_>, Vec<_>) = group.into_iter().partition(Pending::expired);
        late.into_iter().for_each(|p| p.reply(Err(too_late())));
        if live.is_empty() {
            return;
        }
        match attempt(&db, live).await {
            Attempt::Done => return,
            // Someone's deadline passed before the commit: nothing was committed; the
            // others go again without it.
            Attempt::Expired(rest) => group = rest,
            Attempt::Failed(rest, e) if rest.len() == 1 => {
                rest.into_iter().for_each(|p| p.reply(Err(e.clone())));
                return;
            }
            Attempt::Failed(rest, e) => {
                tracing::debug!(error = %e, size = rest.len(), "group of creates failed; each goes alone");
                let alone = rest.into_iter().map(|p| create_all(db.clone(), vec![p]));
                futures::future::join_all(alone).await;
                return;
            }
        }
    }
}

enum Attempt {
    Done,
    Expired(Vec<Pending>),
    /// Nothing was committed.
    Failed(Vec<Pending>, CoreError),
}

/// How each create of a group turned out before anything is written.
enum Sorted {
    Answered(Result<Reply, CoreError>),
    Fresh,
}

async fn attempt(db: &Db, group: Vec<Pending>) -> Attempt {
    ::metrics::histogram!(metrics::CREATE_GROUP_SIZE).record(group.len() as f64);
    let span = statement_span(&group);
    match group.iter().any(|p| p.keyed.is_some()) {
        true => in_transaction(db, group).instrument(span).await,
        false => in_one_statement(db, group).instrument(span).await,
    }
}

/// The group's statement, for an exporter (see [`crate::telemetry::shared`]).
fn statement_span(group: &[Pending]) -> tracing::Span {
    let span = crate::telemetry::shared(group.iter().map(|p| &p.span), |parent| {
        super::db::statement(parent, "INSERT", "users")
    });
    let size = i64::try_from(group.len()).unwrap_or(i64::MAX);
    crate::telemetry::attribute(&span, "db.operation.batch.size", size);
    span
}

/// Without request keys, the group is one statement that commits by itself.
async fn in_one_statement(db: &Db, group: Vec<Pending>) -> Attempt {
    let started = Instant::now();
    let mut conn = match db.pool.acquire().await {
        Ok(conn) => conn,
        Err(e) => return Attempt::Failed(group, db_error(e)),
    };
    // The statement commits: the deadlines are checked just before it.
    if group.iter().any(Pending::expired) {
        return Attempt::Expired(group);
    }
    match write(db, &mut conn, &group).await {
        Ok(outcome) => {
            committed(db, started, group, outcome).await;
            Attempt::Done
        }
        Err(e) => Attempt::Failed(group, e),
    }
}

/// With request keys: their locks, their lookup, the write and the commit, in a transaction.
async fn in_transaction(db: &Db, group: Vec<Pending>) -> Attempt {
    let started = Instant::now();
    let mut tx = match db.pool.begin().await {
        Ok(tx) => tx,
        Err(e) => return Attempt::Failed(group, db_error(e)),
    };
    let sorted = match sort(db, &mut tx, &group).await {
        Ok(s) => s,
        Err(e) => {
            // At once, not later by the pool: each create goes again alone, for its key's lock.
            let _ = tx.rollback().await;
            return Attempt::Failed(group, e);
        }
    };
    let (mut answered, mut fresh) = (Vec::new(), Vec::new());
    for (p, s) in group.into_iter().zip(sorted) {
        match s {
            Sorted::Answered(result) => answered.push((p, result)),
            Sorted::Fresh => fresh.push(p),
        }
    }
    let outcome = match write(db, &mut tx, &fresh).await {
        Ok(outcome) => outcome,
        Err(e) => {
            let _ = tx.rollback().await;
            fresh.extend(answered.into_iter().map(|(p, _)| p));
            return Attempt::Failed(fresh, e);
        }
    };
    if fresh.iter().any(Pending::expired) {
        let _ = tx.rollback().await;
        fresh.extend(answered.into_iter().map(|(p, _)| p));
        return Attempt::Expired(fresh);
    }
    if let Err(e) = tx.commit().await {
        // Whether it committed is unknown: say so rather than try again.
        let e = db_error(e);
        fresh.into_iter().for_each(|p| p.reply(Err(e.clone())));
        answered.into_iter().for_each(|(p, r)| p.reply(r));
        return Attempt::Done;
    }
    answered.into_iter().for_each(|(p, r)| p.reply(r));
    committed(db, started, fresh, outcome).await;
    Attempt::Done
}

/// After the commit: wake the publisher, tell every instance, answer.
async fn committed(db: &Db, started: Instant, written: Vec<Pending>, outcome: Vec<Outcome>) {
    db.signal.raise();
    ::metrics::histogram!(metrics::CREATE_GROUP_DURATION).record(started.elapsed());
    let created: Vec<_> = outcome.iter().filter_map(|r| r.as_ref().ok()).collect();
    invalidate_created(db, created.iter().map(|(user, _)| user)).await;
    for (p, result) in written.into_iter().zip(outcome) {
        p.reply(result.map(|(_, reply)| reply));
    }
}

/// Takes the lock of every request key and looks them up: a key held elsewhere (or twice in
/// this group) is a conflict, a known key answers as before, the rest are fresh. A
/// redelivery's key held elsewhere is waited for ([`ledger::lock`]).
async fn sort(
    db: &Db,
    tx: &mut sqlx::PgConnection,
    group: &[Pending],
) -> Result<Vec<Sorted>, CoreError> {
    let keys: Vec<&Keyed> = group.iter().filter_map(|p| p.keyed.as_ref()).collect();
    if keys.is_empty() {
        return Ok(group.iter().map(|_| Sorted::Fresh).collect());
    }
    let locks: Vec<i64> = keys.iter().map(|k| ledger::lock_id(k.key())).collect();
    let locked: Vec<(i64, bool)> =
        sqlx::query_as("SELECT l, pg_try_advisory_xact_lock(l) FROM UNNEST($1::bigint[]) AS t(l)")
            .bind(&locks)
            .fetch_all(&mut *tx)
            .await
            .map_err(db_error)?;
    let mut locked: HashMap<i64, bool> = locked.into_iter().collect();
    for k in keys.iter().filter(|k| k.redelivered()) {
        let id = ledger::lock_id(k.key());
        if locked.get(&id) == Some(&false) {
            locked.insert(id, ledger::lock(tx, k).await?);
        }
    }
    // Looked up after the locks are held, so a write that held one has committed by now.
    let names: Vec<&str> = keys.iter().map(|k| k.key()).collect();
    let rows: Vec<(String, String, i16, Json<Value>)> = sqlx::query_as(
        "SELECT request_key, fingerprint, status, body FROM applied_requests
          WHERE request_key = ANY($1)",
    )
    .bind(&names)
    .fetch_all(&mut *tx)
    .await
    .map_err(db_error)?;
    let mut known: HashMap<String, (String, i16, Value)> = rows
        .into_iter()
        .map(|(k, f, s, Json(b))| (k, (f, s, b)))
        .collect();
    let mut seen = HashSet::new();
    let sorted = group.iter().map(|p| {
        let Some(k) = &p.keyed else {
            return Sorted::Fresh;
        };
        let free = locked.get(&ledger::lock_id(k.key())) == Some(&true);
        if !free || !seen.insert(k.key()) {
            return Sorted::Answered(Err(ledger::still_running()));
        }
        match known.remove(k.key()) {
            Some((fingerprint, status, body)) => {
                Sorted::Answered(ledger::replay(&db.keys, k, &fingerprint, status, body))
            }
            None => Sorted::Fresh,
        }
    });
    Ok(sorted.collect())
}

/// How one create of a group turned out: its user and reply, or its own error.
type Outcome = Result<(User, Reply), CoreError>;

/// Inserts the creates with their events and ledger entries.
async fn write(
    db: &Db,
    conn: &mut sqlx::PgConnection,
    fresh: &[Pending],
) -> Result<Vec<Outcome>, CoreError> {
    if fresh.is_empty() {
        return Ok(Vec::new());
    }
    let inserts = fresh
        .iter()
        .map(|p| Insert {
            new: p.new.clone(),
            corr: &p.corr,
            keyed: p.keyed.as_ref(),
        })
        .collect();
    let inserted = insert_users(conn, &db.keys, inserts).await?;
    Ok(inserted
        .into_iter()
        .map(|r| r.map_err(CoreError::EmailTaken))
        .collect())
}
