//! Reads the in-process copy could not answer, gathered: while rounds are running, the misses
//! that arrive wait for the next one, which asks Redis once (one `MGET`) and PostgreSQL once
//! per kind of key (one `= ANY($1)`) for all of them, answers each, and fills the cache in
//! the background. Alone, a miss is a round of its own and waits for nobody; under load, a
//! round answers many at the cost of two round trips.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, PoisonError};

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use futures::FutureExt;
use tokio::sync::oneshot;
use tracing::Instrument;

use super::db::Db;
use super::rows;
use crate::cache::Key;
use user_domain::error::CoreError;
use user_domain::views::Rendered;
use user_domain::{Email, UserId};

/// Rounds running at once: while some wait for Redis or PostgreSQL, others are gathering.
const ROUNDS_RUNNING: usize = 4;
/// Most keys one round asks for; the rest wait for the next. Single reads never come near it
/// (32 callers spread over 4 rounds); batches do, and a short round keeps the batch behind
/// it from waiting long: batches of 100 at a million users kept their rate and their p99
/// fell by a quarter with 200 instead of 1 000 (docs/performance.md).
const MOST_KEYS: usize = 200;

/// What one read wants: its keys, and where its answer goes (a user or nothing per key).
struct Wanted {
    keys: Vec<Key>,
    caller: Arc<str>,
    answer: oneshot::Sender<Result<Vec<Option<Arc<Rendered>>>, CoreError>>,
    /// The reader's span (disabled without an exporter).
    span: tracing::Span,
}

#[derive(Default)]
struct Queue {
    waiting: Vec<Wanted>,
    rounds: usize,
}

/// The gatherer of misses. Cheap to clone; every clone is the same queue.
#[derive(Clone, Default)]
pub(super) struct Reads {
    queue: Arc<Mutex<Queue>>,
}

impl Reads {
    /// The users `keys` name (a live user or nothing, in order), from Redis or PostgreSQL.
    pub(super) async fn find(
        &self,
        db: &Db,
        keys: Vec<Key>,
        caller: &str,
    ) -> Result<Vec<Option<Arc<Rendered>>>, CoreError> {
        let (answer, answered) = oneshot::channel();
        let start = {
            let mut queue = self.lock();
            queue.waiting.push(Wanted {
                keys,
                caller: caller.into(),
                answer,
                span: crate::telemetry::request_span(),
            });
            let start = queue.rounds < ROUNDS_RUNNING;
            queue.rounds += usize::from(start);
            start
        };
        if start {
            tokio::spawn(self.clone().run(db.clone()));
        }
        answered.await.unwrap_or_else(|_| {
            Err(CoreError::Unavailable(
                "the database stopped answering".to_owned(),
            ))
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs rounds until nobody waits. A round past the database's patience is dropped (its
    /// readers have been answered 503 by then); a panic fails that round's reads only.
    async fn run(self, db: Db) {
        loop {
            let round = {
                let mut queue = self.lock();
                if queue.waiting.is_empty() {
                    queue.rounds -= 1;
                    return;
                }
                let mut keys = 0;
                let take = queue
                    .waiting
                    .iter()
                    .take_while(|w| {
                        keys += w.keys.len();
                        keys <= MOST_KEYS
                    })
                    .count()
                    .max(1);
                queue.waiting.drain(..take).collect::<Vec<_>>()
            };
            // Readers that stopped waiting (their patience ran out while the database
            // stalled) are not fetched for.
            let round: Vec<Wanted> = round
                .into_iter()
                .filter(|w| !w.answer.is_closed())
                .collect();
            if round.is_empty() {
                continue;
            }
            let span = crate::telemetry::shared(
                round.iter().map(|w| &w.span),
                |parent| crate::otel_span!(parent: parent, "read users", readers = round.len()),
            );
            let work = AssertUnwindSafe(round_of(&db, round).instrument(span)).catch_unwind();
            let _ = tokio::time::timeout(db.guard.patience(), work).await;
        }
    }
}

/// One round: Redis for every key, then PostgreSQL for what Redis lacked; each read answered,
/// then the cache filled with what PostgreSQL found.
async fn round_of(db: &Db, round: Vec<Wanted>) {
    let keys: Vec<(Key, &str)> = round
        .iter()
        .flat_map(|w| w.keys.iter().map(|k| (k.clone(), &*w.caller)))
        .collect();
    let (mut found, mark) = db.cache.remote(&keys).await;
    let (mut ids, mut emails) = (Vec::new(), Vec::new());
    for ((key, _), slot) in keys.iter().zip(&found) {
        match (key, slot) {
            (Key::Id(id), None) => ids.push(*id),
            (Key::Email(email), None) => emails.push(email.clone()),
            (_, Some(_)) => {}
        }
    }
    // Readers of the same user in one round share its fetch and its fill.
    ids.sort_unstable();
    ids.dedup();
    let mut seen = HashSet::new();
    emails.retain(|e| seen.insert(e.clone()));
    let fetched = match fetch(db, &ids, &emails).await {
        Ok(fetched) => fetched,
        Err(e) => {
            round.into_iter().for_each(|w| {
                let _ = w.answer.send(Err(e.clone()));
            });
            return;
        }
    };
    let (by_id, by_email) = fetched;
    // A row that cannot be read back fails the reads asking for that user, not the round.
    let mut failed: Vec<Option<CoreError>> = vec![None; keys.len()];
    let mut fill = Vec::with_capacity(by_id.len() + by_email.len());
    for (((key, _), slot), failure) in keys.iter().zip(found.iter_mut()).zip(&mut failed) {
        if slot.is_some() {
            continue;
        }
        let stored = match key {
            Key::Id(id) => by_id.get(id),
            Key::Email(email) => by_email.get(email.as_ref()),
        };
        match stored {
            Some(Ok(u)) => {
                fill.push((u.clone(), matches!(key, Key::Email(_))));
                *slot = Some(u.clone());
            }
            Some(Err(e)) => *failure = Some(e.clone()),
            None => {}
        }
    }
    fill.sort_unstable_by_key(|(u, by_email)| (u.user.id, !*by_email));
    fill.dedup_by_key(|(u, _)| u.user.id);
    let (mut found, mut failed) = (found.into_iter(), failed.into_iter());
    for w in round {
        let answer: Vec<_> = found.by_ref().take(w.keys.len()).collect();
        let _ = match failed.by_ref().take(w.keys.len()).flatten().next() {
            Some(e) => w.answer.send(Err(e)),
            None => w.answer.send(Ok(answer)),
        };
    }
    db.cache.fill_later(mark, fill);
}

/// A user read back, or why its row could not be.
type Stored = Result<Arc<Rendered>, CoreError>;

/// By id, and by address (lower case, as stored and as asked).
type Fetched = (HashMap<UserId, Stored>, HashMap<String, Stored>);

/// The live users with these ids and these addresses: one query per kind asked for.
async fn fetch(db: &Db, ids: &[UserId], emails: &[Email]) -> Result<Fetched, CoreError> {
    // Decoded once the database has answered and the connection is back (see `Db::asked`).
    let read = |r: rows::UserRow| r.into_user(&db.keys).and_then(Rendered::new);
    let by_id = async {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let users = db
            .asked("users", || rows::fetch_many(db.readers.pool(), ids))
            .await?;
        Ok::<_, CoreError>(
            users
                .into_iter()
                .map(|r| (UserId::from(r.id), read(r)))
                .collect(),
        )
    };
    let by_email = async {
        if emails.is_empty() {
            return Ok(HashMap::new());
        }
        let users = db
            .asked("users", || rows::fetch_by_emails(db.readers.pool(), emails))
            .await?;
        Ok::<_, CoreError>(
            users
                .into_iter()
                .map(|r| (r.address().to_lowercase(), read(r)))
                .collect(),
        )
    };
    futures::try_join!(by_id, by_email)
}
