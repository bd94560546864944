//! Reading through the cache: the in-process copy (no wait), Redis (one round trip for many
//! lookups, with Redis' clock for the fill), and filling both with what the database
//! answered, the Redis part in the background so that no answer waits for it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::{Inner, Kind, MAX_FILL_AGE, ReadMark, Tier, UserCache, scripts};
use user_domain::views::Rendered;
use user_domain::{Email, User, UserId};

/// What a read looks a user up by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    Id(UserId),
    Email(Email),
}

impl Key {
    fn kind(&self) -> Kind {
        match self {
            Self::Id(_) => Kind::User,
            Self::Email(_) => Kind::Email,
        }
    }

    /// Whether `u` is the user this key names.
    pub fn names(&self, u: &User) -> bool {
        match self {
            Self::Id(id) => u.id == *id,
            Self::Email(email) => u.email == *email,
        }
    }

    fn by_email(&self) -> bool {
        matches!(self, Self::Email(_))
    }
}

impl UserCache {
    /// The mark of a read that asks Redis nothing: its fill goes in process only.
    pub fn mark(&self) -> ReadMark {
        ReadMark {
            at: Instant::now(),
            redis_time: None,
        }
    }

    /// The in-process copy's users for `keys`, in order, counted for `caller`; no wait.
    pub fn local(&self, keys: &[Key], caller: &str) -> Vec<Option<Arc<Rendered>>> {
        let Some(c) = &self.inner else {
            return vec![None; keys.len()];
        };
        let (serve, now) = (c.serve(), Instant::now());
        let found: Vec<_> = keys
            .iter()
            .map(|key| match key {
                Key::Id(id) => c.local_user(id, serve, now),
                Key::Email(email) => c
                    .local_email(email, now)
                    .and_then(|id| c.local_user(&id, serve, now))
                    .filter(|u| u.user.email == *email),
            })
            .collect();
        let mut counts = Counts::default();
        for (key, slot) in keys.iter().zip(&found) {
            if slot.is_some() {
                counts.add(caller, key.kind(), Tier::Local);
            }
        }
        counts.record(c);
        found
    }

    /// Redis' users for `keys` (each with its caller, for the counts) in one round trip, and
    /// the mark to fill what it lacked with. A key found nowhere is counted a miss. While
    /// Redis is off, broken or distrusted, or answers too little to pay
    /// ([`super::warmth`]), it is not asked and nothing is found.
    pub async fn remote(&self, keys: &[(Key, &str)]) -> (Vec<Option<Arc<Rendered>>>, ReadMark) {
        let mut mark = self.mark();
        let mut found: Vec<Option<Arc<Rendered>>> = vec![None; keys.len()];
        let Some(c) = &self.inner else {
            return (found, mark);
        };
        let ask = !c.purge.load(Ordering::Acquire) && !keys.is_empty() && c.warmth.worth_asking();
        let answer = match ask {
            true => {
                let names: Vec<String> = keys
                    .iter()
                    .map(|(key, _)| match key {
                        Key::Id(id) => c.user_key(*id),
                        Key::Email(email) => c.email_key(email),
                    })
                    .collect();
                c.mget(&names).await
            }
            false => None,
        };
        if let Some((values, time)) = answer {
            mark.redis_time = Some(time);
            for ((slot, (key, _)), value) in found.iter_mut().zip(keys).zip(values) {
                *slot = value
                    .and_then(|v| c.keys.open_user(&v).ok())
                    .filter(|u| key.names(u) && !c.is_unclean(&u.id))
                    .and_then(|u| Rendered::new(u).ok());
                if let Some(u) = slot {
                    c.keep_local(u, mark, key.by_email());
                }
            }
            let hits = found.iter().filter(|u| u.is_some()).count();
            c.warmth.learned(keys.len(), hits);
        }
        let mut counts = Counts::default();
        for (slot, (key, caller)) in found.iter().zip(keys) {
            let tier = if slot.is_some() {
                Tier::Redis
            } else {
                Tier::Miss
            };
            counts.add(caller, key.kind(), tier);
        }
        counts.record(c);
        (found, mark)
    }

    /// Stores `users` read from the database after `mark` (each also under its address when
    /// its flag says so), unless a write came in between: in process at once, and in Redis,
    /// in the background, as many of them as Redis' hit share says pay
    /// ([`super::warmth`]). A fill is optional: when [`super::FILLS_RUNNING`] are running
    /// already, this one is skipped, and a later read of those users fills.
    pub fn fill_later(&self, mark: ReadMark, mut users: Vec<(Arc<Rendered>, bool)>) {
        let Some(c) = &self.inner else { return };
        if users.is_empty() || mark.at.elapsed() > MAX_FILL_AGE {
            return;
        }
        for (u, by_email) in &users {
            c.keep_local(u, mark, *by_email);
        }
        users.truncate(c.warmth.to_fill(users.len()));
        if mark.redis_time.is_none() || users.is_empty() {
            return;
        }
        let Ok(room) = c.fills.clone().try_acquire_owned() else {
            return;
        };
        let c = c.clone();
        tokio::spawn(async move {
            c.fill_redis(mark, &users).await;
            drop(room);
        });
    }

    /// The users among `ids`, from the in-process copy then Redis, and the mark to fill the
    /// rest with.
    pub async fn get_many(
        &self,
        ids: &[UserId],
        caller: &str,
    ) -> (HashMap<UserId, Arc<Rendered>>, ReadMark) {
        let keys: Vec<Key> = ids.iter().map(|id| Key::Id(*id)).collect();
        let mut found = HashMap::with_capacity(ids.len());
        let mut rest = Vec::new();
        let local = self.local(&keys, caller);
        for (key, local) in keys.into_iter().zip(local) {
            match local {
                Some(u) => {
                    found.insert(u.user.id, u);
                }
                None => rest.push((key, caller)),
            }
        }
        let (users, mark) = self.remote(&rest).await;
        found.extend(users.into_iter().flatten().map(|u| (u.user.id, u)));
        (found, mark)
    }

    /// The live user with this address, if cached, and the mark to fill it with otherwise.
    pub async fn get_by_email(
        &self,
        email: &Email,
        caller: &str,
    ) -> (Option<Arc<Rendered>>, ReadMark) {
        let key = Key::Email(email.clone());
        if let Some(u) = self
            .local(std::slice::from_ref(&key), caller)
            .pop()
            .flatten()
        {
            return (Some(u), self.mark());
        }
        let (mut users, mark) = self.remote(&[(key, caller)]).await;
        (users.pop().flatten(), mark)
    }

    /// [`Self::fill_later`] of `users`, all with the same flag, waiting for Redis.
    pub async fn fill(&self, mark: ReadMark, users: &[Arc<Rendered>], by_email: bool) {
        let Some(c) = &self.inner else { return };
        if users.is_empty() || mark.at.elapsed() > MAX_FILL_AGE {
            return;
        }
        let users: Vec<_> = users.iter().map(|u| (u.clone(), by_email)).collect();
        for (u, by_email) in &users {
            c.keep_local(u, mark, *by_email);
        }
        c.fill_redis(mark, &users).await;
    }
}

impl Inner {
    /// Writes `users` into Redis unless an invalidation marker is as new as `mark`.
    async fn fill_redis(&self, mark: ReadMark, users: &[(Arc<Rendered>, bool)]) {
        let Some(time) = mark.redis_time else { return };
        let mut invocation = scripts::FILL.prepare_invoke();
        invocation.arg(time).arg(self.ttl.as_secs().max(1));
        let mut any = false;
        for (u, by_email) in users.iter().filter(|(u, _)| !self.is_unclean(&u.user.id)) {
            let Ok(value) = self.keys.seal_user(u) else {
                continue;
            };
            invocation
                .key(self.marker_key(u.user.id))
                .key(self.user_key(u.user.id));
            if *by_email {
                invocation.key(self.email_key(&u.user.email));
            }
            invocation.arg(if *by_email { 2 } else { 1 }).arg(value);
            any = true;
        }
        if any {
            let _: Option<i64> = self
                .run("EVALSHA fill", async |conn| {
                    invocation.invoke_async(conn).await
                })
                .await;
        }
    }
}

/// Lookups counted by caller, kind and tier, so that each series is incremented once per
/// call rather than once per key.
#[derive(Default)]
struct Counts<'a>(Vec<(&'a str, Kind, Tier, usize)>);

impl<'a> Counts<'a> {
    fn add(&mut self, caller: &'a str, kind: Kind, tier: Tier) {
        match self
            .0
            .iter_mut()
            .find(|(c, k, t, _)| *c == caller && *k == kind && *t == tier)
        {
            Some((_, _, _, n)) => *n += 1,
            None => self.0.push((caller, kind, tier, 1)),
        }
    }

    fn record(self, c: &Inner) {
        for (caller, kind, tier, n) in self.0 {
            c.count(caller, kind, tier, n);
        }
    }
}
