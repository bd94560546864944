//! What one request of each workload is, and how it is sent.

use hyper::{Method, StatusCode};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Value, json};
use user_service_client::Client;

use crate::ceilings;
use crate::http::{Call, Conn};
use crate::scale;
use crate::workloads::{Answer, Ctx, Job, PASSWORD_HASH, Rng, Workload};

type Outcome = Result<(), String>;

impl Ctx {
    fn id(&self, rng: &mut Rng) -> &str {
        &self.users.ids[rng.below(self.users.ids.len())]
    }

    fn ids(&self, rng: &mut Rng, n: usize) -> Vec<&str> {
        (0..n).map(|_| self.id(rng)).collect()
    }

    async fn rest(
        &self,
        conn: &mut Conn,
        method: Method,
        path: String,
        body: Option<Value>,
        key: Option<&str>,
        expect: StatusCode,
    ) -> Outcome {
        self.rest_to(conn, &self.base, method, path, body, key, expect)
            .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn rest_to(
        &self,
        conn: &mut Conn,
        base: &str,
        method: Method,
        path: String,
        body: Option<Value>,
        key: Option<&str>,
        expect: StatusCode,
    ) -> Outcome {
        let (status, _) = self.send(conn, base, method, path, body, key).await?;
        if status == expect {
            Ok(())
        } else {
            Err(format!("status {}", status.as_u16()))
        }
    }

    /// One request with the bench's API key (and `key` as its idempotency key).
    pub(crate) async fn send(
        &self,
        conn: &mut Conn,
        base: &str,
        method: Method,
        path: String,
        body: Option<Value>,
        key: Option<&str>,
    ) -> Result<(StatusCode, bytes::Bytes), String> {
        let mut headers = Vec::new();
        if let Some(k) = &self.api_key {
            headers.push(("x-api-key", k.as_str()));
        }
        if let Some(k) = key {
            headers.push(("idempotency-key", k));
        }
        let body = body
            .map(|b| serde_json::to_vec(&b))
            .transpose()
            .map_err(|e| e.to_string())?;
        let call = Call {
            method,
            base,
            path,
            body,
            headers,
        };
        conn.send(call).await
    }

    async fn rpc(client: Option<&Client>, method: &str, params: Value, expect: u64) -> Outcome {
        let client = client.ok_or("no RPC client")?;
        let reply = client.request(method, &params).await.map_err(|e| match e {
            user_service_client::ClientError::Timeout(_) => "timeout".to_owned(),
            other => other.to_string(),
        })?;
        match reply["status"].as_u64() {
            Some(s) if s == expect => Ok(()),
            Some(s) => Err(format!("status {s} {}", reply["error"]["code"])),
            None => Err("reply without status".to_owned()),
        }
    }

    /// Reads every seeded user once (100 per batch lookup), and by address too when
    /// `by_email` (addresses are cached apart), so that measurements start from a service
    /// whose users are cached, as in steady state, not from the cold start that seeding leaves.
    pub async fn warm(&self, by_email: bool) -> Outcome {
        let mut conn = Conn::default();
        for chunk in self.users.ids.chunks(100) {
            let path = format!("/api/batch/users/lookup?ids={}", chunk.join(","));
            self.rest(&mut conn, Method::GET, path, None, None, StatusCode::OK)
                .await?;
        }
        if by_email {
            for email in &self.users.emails {
                let path = format!("/api/internal/users/email/{email}");
                self.rest(&mut conn, Method::GET, path, None, None, StatusCode::OK)
                    .await?;
            }
        }
        Ok(())
    }

    /// Waits until the service has published every event in its outbox (`/health`), so that
    /// the next measurement does not share the machine with the publishing of this one's.
    pub async fn drain_outbox(&self) -> Result<std::time::Duration, String> {
        let started = std::time::Instant::now();
        let mut conn = Conn::default();
        while started.elapsed() < std::time::Duration::from_secs(300) {
            let health = "/health".to_owned();
            let (_, body) = self
                .send(&mut conn, &self.base, Method::GET, health, None, None)
                .await?;
            let health: Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
            if health["components"]["outbox"]["outboxPending"].as_u64() == Some(0) {
                return Ok(started.elapsed());
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        Err("the outbox did not drain in 300 s".to_owned())
    }

    /// One request of `job`; `uniq` is unique within the run.
    pub async fn call(
        &self,
        job: &Job,
        conn: &mut Conn,
        rng: &mut Rng,
        uniq: &str,
    ) -> Result<Answer, String> {
        if matches!(job, Job::Service(Workload::FrozenPostgres))
            && let Some(answer) = self.uncached_read(conn, rng).await
        {
            return Ok(answer);
        }
        self.request(job, conn, rng, uniq)
            .await
            .map(|()| Answer::Measured)
    }

    async fn request(&self, job: &Job, conn: &mut Conn, rng: &mut Rng, uniq: &str) -> Outcome {
        let w = match job {
            Job::Sql(Workload::CeilSqlCreate, pool) => {
                return ceilings::sql_create(pool, &self.tag, uniq).await;
            }
            Job::Sql(w, pool) => return scale::sql_read(pool, *w, self, rng).await,
            // With a dependency frozen, the requests of the workloads they measure.
            Job::Service(Workload::FrozenRedis | Workload::FrozenPostgres) => Workload::RestGet,
            Job::Service(Workload::FrozenRabbitmq) => match rng.below(2) {
                0 => Workload::RestGet,
                _ => Workload::RestCreate,
            },
            // The scale reads are the ordinary ones; what differs is the set of users and
            // that the cache was not warmed.
            Job::Service(Workload::ScaleGet) => Workload::RestGet,
            Job::Service(Workload::ScaleEmail) => Workload::RestEmail,
            Job::Service(Workload::ScaleBatch100) => Workload::RestBatch100,
            Job::Service(w) => *w,
        };
        let users = "/api/internal/users";
        let ok = StatusCode::OK;
        let new_user = || {
            let email = format!("new-{uniq}.{}@bench.example.com", self.tag);
            json!({"name": "Bench User", "email": email, "password": PASSWORD_HASH})
        };
        match w {
            Workload::RestGet => {
                let url = format!("{users}/{}", self.id(rng));
                self.rest(conn, Method::GET, url, None, None, ok).await
            }
            Workload::RestEmail => {
                let email = &self.users.emails[rng.below(self.users.emails.len())];
                self.rest(
                    conn,
                    Method::GET,
                    format!("{users}/email/{email}"),
                    None,
                    None,
                    ok,
                )
                .await
            }
            Workload::RestBatch10 | Workload::RestBatch100 => {
                let n = if w == Workload::RestBatch10 { 10 } else { 100 };
                let ids = self.ids(rng, n).join(",");
                let url = format!("/api/batch/users/lookup?ids={ids}");
                self.rest(conn, Method::GET, url, None, None, ok).await
            }
            Workload::RestProfiles => {
                let body = json!({"userIds": self.ids(rng, 10)});
                let url = format!("{users}/batch/profiles");
                self.rest(conn, Method::POST, url, Some(body), None, ok)
                    .await
            }
            Workload::RestCreate => {
                let key = format!("{}-{uniq}", self.tag);
                let created = StatusCode::CREATED;
                self.rest(
                    conn,
                    Method::POST,
                    users.into(),
                    Some(new_user()),
                    Some(&key),
                    created,
                )
                .await
            }
            Workload::RestPrefs => {
                let max = 1 + rng.below(10);
                let body = json!({"downloadSettings": {"maxConcurrentDownloads": max}});
                let url = format!("{users}/{}/preferences", self.id(rng));
                self.rest(conn, Method::PATCH, url, Some(body), None, ok)
                    .await
            }
            Workload::RestPayment => {
                let payment = format!("pay-{}-{uniq}", self.tag);
                let body = json!({"paymentId": payment, "amount": "9.99", "currency": "RUB"});
                let url = format!("{users}/{}/billing-stats", self.id(rng));
                self.rest(
                    conn,
                    Method::POST,
                    url,
                    Some(body),
                    None,
                    StatusCode::CREATED,
                )
                .await
            }
            Workload::RpcGet => {
                let params = json!({"id": self.id(rng)});
                Self::rpc(self.rpc.as_ref(), "users.get", params, 200).await
            }
            Workload::RpcBatch10 => {
                let params = json!({"ids": self.ids(rng, 10)});
                Self::rpc(self.rpc.as_ref(), "users.batchLookup", params, 200).await
            }
            Workload::RpcCreate => {
                Self::rpc(self.rpc.as_ref(), "users.create", new_user(), 201).await
            }
            Workload::CeilRpcNoop => {
                let params = json!({"id": self.id(rng)});
                Self::rpc(self.noop.as_ref(), "users.get", params, 200).await
            }
            Workload::CeilWarp | Workload::CeilWarpBatch100 => {
                let base = self.warp_base.as_deref().ok_or("no warp server")?;
                let path = if w == Workload::CeilWarp {
                    "one"
                } else {
                    "batch"
                };
                let url = format!("/{path}/{}", self.id(rng));
                self.rest_to(conn, base, Method::GET, url, None, None, ok)
                    .await
            }
            Workload::ScaleZipf => {
                let zipf = self.zipf.as_ref().ok_or("no Zipf table")?;
                let user = zipf.user(rng);
                let url = if rng.unit() < scale::ZIPF_BY_EMAIL {
                    format!("{users}/email/{}", self.users.emails[user])
                } else {
                    format!("{users}/{}", self.users.ids[user])
                };
                self.rest(conn, Method::GET, url, None, None, ok).await
            }
            Workload::ScaleSearchPrefix | Workload::ScaleSearchInside => {
                let q = scale::search_query(&self.names, w, rng)?;
                let q = utf8_percent_encode(&q, NON_ALPHANUMERIC);
                let url = format!("{users}/search?q={q}&limit={}", scale::SEARCH_LIMIT);
                self.rest(conn, Method::GET, url, None, None, ok).await
            }
            Workload::ScaleListDeep => {
                let token = scale::page_token_at(self.id(rng))?;
                let url = format!("{users}?limit=100&pageToken={token}");
                self.rest(conn, Method::GET, url, None, None, ok).await
            }
            Workload::CeilSqlCreate
            | Workload::CeilSqlGet
            | Workload::CeilSqlEmail
            | Workload::CeilSqlBatch100
            | Workload::CeilSqlListDeep
            | Workload::CeilSqlSearchInside => Err("a SQL ceiling needs its pool".to_owned()),
            Workload::FrozenRedis
            | Workload::FrozenPostgres
            | Workload::FrozenRabbitmq
            | Workload::ScaleGet
            | Workload::ScaleEmail
            | Workload::ScaleBatch100 => {
                Err("this workload runs the requests of another".to_owned())
            }
        }
    }
}
