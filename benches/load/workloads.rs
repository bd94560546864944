//! The workloads, and the context their requests run in (the requests: `requests.rs`).

use sqlx::PgPool;
use user_service_client::Client;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Workload {
    RestGet,
    RestEmail,
    RestBatch10,
    RestBatch100,
    RestProfiles,
    RestCreate,
    RestPrefs,
    RestPayment,
    RpcGet,
    RpcBatch10,
    RpcCreate,
    CeilRpcNoop,
    CeilWarp,
    CeilWarpBatch100,
    CeilSqlCreate,
    FrozenRedis,
    FrozenPostgres,
    FrozenRabbitmq,
    ScaleGet,
    ScaleEmail,
    ScaleZipf,
    ScaleBatch100,
    CeilSqlGet,
    CeilSqlEmail,
    CeilSqlBatch100,
    CeilSqlListDeep,
    CeilSqlSearchInside,
    ScaleSearchPrefix,
    ScaleSearchInside,
    ScaleListDeep,
}

impl Workload {
    /// Does it leave events for the service to publish?
    pub fn writes(self) -> bool {
        matches!(
            self,
            Self::RestCreate
                | Self::RpcCreate
                | Self::RestPrefs
                | Self::RestPayment
                | Self::CeilSqlCreate
                | Self::FrozenRabbitmq
        )
    }

    /// Reads of the seeded users, which a warm cache answers (set against a transport's
    /// ceiling): the bench warms the cache before each. Not before the scale reads, which
    /// measure what a cache cannot hold, nor before a listing, which never reads it.
    pub fn reads(self) -> bool {
        let transport = matches!(
            self.ceiling(),
            Some(Self::CeilWarp | Self::CeilWarpBatch100 | Self::CeilRpcNoop)
        );
        transport && !self.scale()
    }

    /// The scale reads (see [`crate::scale`]): over every seeded user, without warming the
    /// cache first; the cache's tiers are read around their window.
    pub fn scale(self) -> bool {
        matches!(
            self,
            Self::ScaleGet | Self::ScaleEmail | Self::ScaleZipf | Self::ScaleBatch100
        )
    }

    /// A ceiling measured through sqlx on a pool of the service's size, in this process.
    pub fn sql(self) -> bool {
        matches!(
            self,
            Self::CeilSqlCreate
                | Self::CeilSqlGet
                | Self::CeilSqlEmail
                | Self::CeilSqlBatch100
                | Self::CeilSqlListDeep
                | Self::CeilSqlSearchInside
        )
    }

    /// What runs when `--only` is not given, in this order: the ceilings and the reads first,
    /// on a quiet service; then the writes, whose events the service publishes in the
    /// background from then on; last the frozen dependencies (see [`crate::frozen`]), whose
    /// recovery nothing else should share.
    pub const DEFAULT: [Workload; 18] = [
        Self::CeilWarp,
        Self::CeilWarpBatch100,
        Self::CeilRpcNoop,
        Self::RestGet,
        Self::RestEmail,
        Self::RestBatch10,
        Self::RestBatch100,
        Self::RestProfiles,
        Self::RpcGet,
        Self::RpcBatch10,
        Self::CeilSqlCreate,
        Self::RestCreate,
        Self::RpcCreate,
        Self::RestPrefs,
        Self::RestPayment,
        Self::FrozenRedis,
        Self::FrozenPostgres,
        Self::FrozenRabbitmq,
    ];

    /// The scale set (`--only scale`), meant for a million users (`--users 1000000`): the
    /// SQL ceilings first, then the reads they bound. It runs only when named.
    pub const SCALE: [Workload; 12] = [
        Self::CeilSqlGet,
        Self::CeilSqlEmail,
        Self::CeilSqlBatch100,
        Self::CeilSqlListDeep,
        Self::CeilSqlSearchInside,
        Self::ScaleGet,
        Self::ScaleEmail,
        Self::ScaleZipf,
        Self::ScaleBatch100,
        Self::ScaleSearchPrefix,
        Self::ScaleSearchInside,
        Self::ScaleListDeep,
    ];

    /// Every workload: the default set, then the scale set.
    pub fn all() -> impl Iterator<Item = Workload> {
        Self::DEFAULT.into_iter().chain(Self::SCALE)
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::RestGet => "rest-get",
            Self::RestEmail => "rest-email",
            Self::RestBatch10 => "rest-batch10",
            Self::RestBatch100 => "rest-batch100",
            Self::RestProfiles => "rest-profiles",
            Self::RestCreate => "rest-create",
            Self::RestPrefs => "rest-prefs",
            Self::RestPayment => "rest-payment",
            Self::RpcGet => "rpc-get",
            Self::RpcBatch10 => "rpc-batch10",
            Self::RpcCreate => "rpc-create",
            Self::CeilRpcNoop => "ceil-rpc-noop",
            Self::CeilWarp => "ceil-warp",
            Self::CeilWarpBatch100 => "ceil-warp-batch100",
            Self::CeilSqlCreate => "ceil-sql-create",
            Self::FrozenRedis => "frozen-redis",
            Self::FrozenPostgres => "frozen-postgres",
            Self::FrozenRabbitmq => "frozen-rabbitmq",
            Self::ScaleGet => "scale-get",
            Self::ScaleEmail => "scale-email",
            Self::ScaleZipf => "scale-zipf",
            Self::ScaleBatch100 => "scale-batch100",
            Self::CeilSqlGet => "ceil-sql-get",
            Self::CeilSqlEmail => "ceil-sql-email",
            Self::CeilSqlBatch100 => "ceil-sql-batch100",
            Self::CeilSqlListDeep => "ceil-sql-list-deep",
            Self::CeilSqlSearchInside => "ceil-sql-search-inside",
            Self::ScaleSearchPrefix => "scale-search-prefix",
            Self::ScaleSearchInside => "scale-search-inside",
            Self::ScaleListDeep => "scale-list-deep",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::all().find(|w| w.name() == name)
    }

    pub fn describe(self) -> &'static str {
        match self {
            Self::RestGet => "GET /api/internal/users/{id}",
            Self::RestEmail => "GET /api/internal/users/email/{email}",
            Self::RestBatch10 => "GET /api/batch/users/lookup?ids= (10 ids)",
            Self::RestBatch100 => "GET /api/batch/users/lookup?ids= (100 ids)",
            Self::RestProfiles => "POST /api/internal/users/batch/profiles (10 ids)",
            Self::RestCreate => "POST /api/internal/users with a unique Idempotency-Key",
            Self::RestPrefs => "PATCH /api/internal/users/{id}/preferences",
            Self::RestPayment => "POST /api/internal/users/{id}/billing-stats (unique paymentId)",
            Self::RpcGet => "users.get over RabbitMQ (client kit)",
            Self::RpcBatch10 => "users.batchLookup of 10 ids over RabbitMQ",
            Self::RpcCreate => "users.create over RabbitMQ (keyed by its message id)",
            Self::CeilRpcNoop => "ceiling: users.get to a no-op responder on the same broker",
            Self::CeilWarp => "ceiling: bare warp server, fixed body of one user",
            Self::CeilWarpBatch100 => "ceiling: bare warp server, fixed body of a 100-id batch",
            Self::CeilSqlCreate => "ceiling: a keyed create's SQL transaction through sqlx",
            Self::FrozenRedis => "rest-get with Redis frozen",
            Self::FrozenPostgres => {
                "rest-get of cached users with PostgreSQL frozen; 1 in 10 reads an uncached id"
            }
            Self::FrozenRabbitmq => "rest-get and rest-create, half each, with RabbitMQ frozen",
            Self::ScaleGet => "rest-get over all users, cache not warmed first",
            Self::ScaleEmail => "rest-email over all users, cache not warmed first",
            Self::ScaleZipf => "Zipf (s = 1.1) over all users: 80 % rest-get, 20 % rest-email",
            Self::ScaleBatch100 => "rest-batch100 over all users, cache not warmed first",
            Self::CeilSqlGet => "ceiling: PostgreSQL's fetch of one user by id = $1 (sqlx)",
            Self::CeilSqlEmail => "ceiling: PostgreSQL's fetch of one user by email (sqlx)",
            Self::CeilSqlBatch100 => "ceiling: PostgreSQL's fetch of 100 users by id (sqlx)",
            Self::CeilSqlListDeep => {
                "ceiling: PostgreSQL's listing page of 100 users after a random seeded user (sqlx)"
            }
            Self::CeilSqlSearchInside => {
                "ceiling: PostgreSQL's search of 4 letters from inside a seeded name (sqlx)"
            }
            Self::ScaleSearchPrefix => {
                "GET /api/internal/users/search?q= the first 3-5 letters of a seeded name"
            }
            Self::ScaleSearchInside => {
                "GET /api/internal/users/search?q= 4 letters from inside a seeded name"
            }
            Self::ScaleListDeep => {
                "GET /api/internal/users?limit=100&pageToken= at a random seeded user (any depth)"
            }
        }
    }

    /// The ceiling its throughput is compared with.
    pub fn ceiling(self) -> Option<Workload> {
        match self {
            Self::RestGet
            | Self::RestEmail
            | Self::RestBatch10
            | Self::RestProfiles
            | Self::FrozenRedis
            | Self::FrozenPostgres => Some(Self::CeilWarp),
            Self::RestBatch100 => Some(Self::CeilWarpBatch100),
            Self::RpcGet | Self::RpcBatch10 => Some(Self::CeilRpcNoop),
            Self::RestCreate | Self::RpcCreate => Some(Self::CeilSqlCreate),
            Self::ScaleGet => Some(Self::CeilSqlGet),
            Self::ScaleEmail => Some(Self::CeilSqlEmail),
            Self::ScaleBatch100 => Some(Self::CeilSqlBatch100),
            Self::ScaleListDeep => Some(Self::CeilSqlListDeep),
            Self::ScaleSearchInside => Some(Self::CeilSqlSearchInside),
            // Mostly cache hits: bounded by HTTP, not by the database.
            Self::ScaleZipf => Some(Self::CeilWarp),
            _ => None,
        }
    }
}

/// The seeded users.
pub struct Seeded {
    pub ids: Vec<String>,
    pub emails: Vec<String>,
}

/// Everything a request needs; shared by all workers.
pub struct Ctx {
    pub base: String,
    pub api_key: Option<String>,
    pub rpc: Option<Client>,
    pub noop: Option<Client>,
    pub warp_base: Option<String>,
    pub users: Seeded,
    /// A sample of the seeded users' names, for the searches.
    pub names: Vec<String>,
    /// The popularity of the users for `scale-zipf`, when it is selected.
    pub zipf: Option<crate::scale::Zipf>,
    /// Makes emails, keys and payment ids unique to this bench run.
    pub tag: String,
}

/// One request of a workload, against what it needs.
pub enum Job {
    Service(Workload),
    /// A SQL ceiling ([`Workload::sql`]) on its pool.
    Sql(Workload, PgPool),
}

/// A cheap per-worker random number generator (xorshift64*).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() >> 32) as usize % n.max(1)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// How a request that got its expected answer counts.
pub enum Answer {
    /// In the workload's histogram.
    Measured,
    /// Apart, by status (`frozen-postgres`' uncached reads, whose status depends on the fix).
    Aside(u16),
}

/// A password hash of the shape the service accepts (it never sees clear text).
pub const PASSWORD_HASH: &str = "$2b$10$abcdefghijklmnopqrstuv";
