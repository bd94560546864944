//! The cache against the local Redis: the ordering rule that keeps old reads out.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use deadpool_redis::redis::AsyncCommands;

use super::*;

const REDIS: &str = "redis://127.0.0.1:6379";

fn pool(url: &str) -> Pool {
    deadpool_redis::Config::from_url(url)
        .create_pool(Some(deadpool_redis::Runtime::Tokio1))
        .unwrap()
}

fn cache() -> (UserCache, Pool, String) {
    cache_via(REDIS)
}

fn cache_via(url: &str) -> (UserCache, Pool, String) {
    let prefix = format!("cache_test_{}", uuid::Uuid::new_v4().simple());
    let pool = pool(url);
    let settings = CacheSettings {
        prefix: prefix.clone(),
        ttl: Duration::from_secs(300),
    };
    (UserCache::new(Some(pool.clone()), settings), pool, prefix)
}

fn user(name: &str) -> User {
    serde_json::from_value(serde_json::json!({
        "id": UserId::generate(), "email": "ann@example.com", "name": name,
        "avatarUrl": null, "isActive": true, "lastLoginAt": null, "lastLoginIp": null,
        "createdAt": "2024-01-01T00:00:00.000Z", "updatedAt": "2024-01-01T00:00:00.000Z",
        "preferences": {}, "privacySettings": {}, "billingInfo": null,
        "billingStats": {"lastPaymentAt": null, "totalSpent": "0.00", "paymentsCount": 0},
        "metadata": {}
    }))
    .unwrap()
}

async fn cleanup(pool: &Pool, prefix: &str) {
    let mut conn = pool.get().await.unwrap();
    let keys: Vec<String> = conn.keys(format!("{prefix}:*")).await.unwrap();
    if !keys.is_empty() {
        let _: i64 = conn.del(keys).await.unwrap();
    }
}

#[tokio::test]
async fn a_read_that_began_before_a_write_does_not_put_the_old_user_back() {
    let (cache, pool, prefix) = cache();
    let old = user("Old");
    let (found, before_write) = cache.get_many(&[old.id], "test").await;
    assert!(found.is_empty());
    assert!(before_write.redis_time.is_some(), "Redis answered");

    // A write commits and invalidates while that read is still at the database.
    cache.invalidate(old.id, &[&old.email]).await;
    cache.fill(before_write, &[&old], true).await;
    let (found, after_write) = cache.get_many(&[old.id], "test").await;
    assert!(found.is_empty(), "the stale fill was refused");
    assert_eq!(cache.get_by_email(&old.email, "test").await.0, None);

    // A read that began after the write fills as usual, under both keys.
    let new = User {
        name: crate::domain::UserName::parse("New").unwrap(),
        ..old.clone()
    };
    cache.fill(after_write, &[&new], true).await;
    let (found, _) = cache.get_many(&[new.id], "test").await;
    assert_eq!(found.get(&new.id), Some(&new));
    assert_eq!(cache.get_by_email(&new.email, "test").await.0, Some(new));
    let figures = cache.figures();
    assert_eq!((figures.redis_hits, figures.unclean), (2, 0));
    cleanup(&pool, &prefix).await;
}

#[tokio::test]
async fn a_disabled_cache_holds_nothing() {
    let cache = UserCache::disabled();
    let u = user("Ann");
    let (_, mark) = cache.get_many(&[u.id], "test").await;
    cache.fill(mark, &[&u], true).await;
    assert!(cache.get_many(&[u.id], "test").await.0.is_empty());
    assert!(!cache.figures().enabled);
}

/// A TCP relay to the local Redis that can be cut (every connection dropped, new ones
/// refused) and restored: the real server, unreachable on demand.
struct Relay {
    url: String,
    open: Arc<AtomicBool>,
    links: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Relay {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("redis://{}", listener.local_addr().unwrap());
        let open = Arc::new(AtomicBool::new(true));
        let links = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (accepting, tasks) = (open.clone(), links.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !accepting.load(Ordering::SeqCst) {
                    continue;
                }
                tasks.lock().unwrap().push(tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect("127.0.0.1:6379").await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                }));
            }
        });
        Self { url, open, links }
    }

    fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }

    fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn an_invalidation_redis_missed_is_delivered_later_and_the_user_not_served_meanwhile() {
    let relay = Relay::start().await;
    let (cache, _, prefix) = cache_via(&relay.url);
    let direct = pool(REDIS);
    let user = user("Ann");
    let key = format!("{prefix}:user:{}", user.id);
    let (_, mark) = cache.get_many(&[user.id], "test").await;
    cache.fill(mark, &[&user], false).await;
    let mut conn = direct.get().await.unwrap();
    assert!(conn.exists::<_, bool>(&key).await.unwrap());

    relay.cut();
    cache.invalidate(user.id, &[&user.email]).await;
    assert_eq!(cache.figures().unclean, 1, "remembered");
    assert!(
        conn.exists::<_, bool>(&key).await.unwrap(),
        "Redis still holds the old user"
    );

    relay.restore();
    let (found, _) = cache.get_many(&[user.id], "test").await;
    assert!(
        found.is_empty(),
        "not served from Redis while its invalidation is pending"
    );
    let inner = cache.inner.clone().unwrap();
    assert!(inner.deliver_unclean().await);
    assert_eq!(cache.figures().unclean, 0);
    assert!(!conn.exists::<_, bool>(&key).await.unwrap(), "delivered");
    cleanup(&direct, &prefix).await;
}
