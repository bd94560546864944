//! Seeding users through the service's own batch create, and the bodies the ceilings serve.

use futures::{StreamExt, stream};
use serde_json::{Value, json};

use crate::workloads::{PASSWORD_HASH, Seeded};

const CHUNK: usize = 100;

/// Creates `n` users in batches of 100 (4 batches in flight); keeps their ids and emails.
pub async fn seed(
    http: &reqwest::Client,
    base: &str,
    api_key: Option<&str>,
    n: usize,
    tag: &str,
) -> Result<Seeded, String> {
    let emails: Vec<String> = (0..n)
        .map(|i| format!("user{i}.{tag}@bench.example.com"))
        .collect();
    let url = format!("{base}/api/batch/users/create");
    let chunks: Vec<&[String]> = emails.chunks(CHUNK).collect();
    let replies: Vec<Result<Vec<String>, String>> = stream::iter(chunks)
        .map(|chunk| create_chunk(http, &url, api_key, chunk))
        .buffered(4)
        .collect()
        .await;
    let mut ids = Vec::with_capacity(n);
    for r in replies {
        ids.extend(r?);
    }
    Ok(Seeded { ids, emails })
}

async fn create_chunk(
    http: &reqwest::Client,
    url: &str,
    api_key: Option<&str>,
    emails: &[String],
) -> Result<Vec<String>, String> {
    let users: Vec<Value> = emails
        .iter()
        .map(|e| json!({"name": "Seeded User", "email": e, "password": PASSWORD_HASH}))
        .collect();
    let reply = send(http.post(url).json(&json!({"users": users})), api_key).await?;
    let results = reply["results"]
        .as_array()
        .ok_or("batch create: no results")?;
    results
        .iter()
        .map(|r| match (r["status"].as_str(), r["id"].as_str()) {
            (Some("created"), Some(id)) => Ok(id.to_owned()),
            _ => Err(format!("batch create: an item was not created: {r}")),
        })
        .collect()
}

async fn send(req: reqwest::RequestBuilder, api_key: Option<&str>) -> Result<Value, String> {
    let req = match api_key {
        Some(k) => req.header("x-api-key", k),
        None => req,
    };
    let resp = req.send().await.map_err(|e| format!("seeding: {e}"))?;
    let status = resp.status();
    let body = resp.bytes().await.map_err(|e| format!("seeding: {e}"))?;
    if !status.is_success() {
        return Err(format!(
            "seeding: {status}: {}",
            String::from_utf8_lossy(&body)
        ));
    }
    serde_json::from_slice(&body).map_err(|e| format!("seeding: {e}"))
}

/// The raw bodies of `GET /api/internal/users/{id}` and of a 100-id batch lookup.
pub async fn bodies(
    http: &reqwest::Client,
    base: &str,
    api_key: Option<&str>,
    users: &Seeded,
) -> Result<(Vec<u8>, Vec<u8>), String> {
    let one_url = format!("{base}/api/internal/users/{}", users.ids[0]);
    let ids: Vec<&str> = users.ids.iter().take(100).map(String::as_str).collect();
    let batch_url = format!("{base}/api/batch/users/lookup?ids={}", ids.join(","));
    let one = send(http.get(one_url), api_key).await?;
    let batch = send(http.get(batch_url), api_key).await?;
    let to_vec = |v: &Value| serde_json::to_vec(v).map_err(|e| e.to_string());
    Ok((to_vec(&one)?, to_vec(&batch)?))
}
