//! Quickstart: create a user over RabbitMQ RPC, change a preference, read it back, delete it.
//!
//! Against a local user-service (in local open mode, or with USER_SERVICE_API_KEY set):
//!
//! ```text
//! cargo run -p user-service-client --example quickstart
//! ```
//!
//! AMQP_URL and RPC_QUEUE name the broker and the queue (defaults: the local broker,
//! `user-service.rpc`).

use serde_json::{Value, json};
use user_service_client::{Client, ClientConfig, ClientError, ErrorCode, NewUser, Uuid};

#[tokio::main]
async fn main() -> Result<(), ClientError> {
    let email = format!("quickstart-{}@example.com", Uuid::new_v4().simple());
    run(ClientConfig::from_env(), &email).await?;
    Ok(())
}

/// Returns the user as read back before it was deleted.
pub async fn run(config: ClientConfig, email: &str) -> Result<Value, ClientError> {
    let client = Client::connect(config).await?;

    let hash = "$2b$10$abcdefghijklmnopqrstuv"; // hashed by the caller, never plain
    let created = client
        .create(&NewUser::new("Quick Start", email, hash))
        .await?;
    let id: Uuid = created["id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .ok_or_else(|| ClientError::Protocol(format!("no id in {created}")))?;
    println!("created {id}");

    // A second create with the same email is refused with a typed error.
    match client.create(&NewUser::new("Twin", email, hash)).await {
        Err(ClientError::Service {
            code: ErrorCode::EmailTaken,
            status,
            ..
        }) => {
            println!("the email is taken ({status})")
        }
        other => {
            return Err(ClientError::Protocol(format!(
                "expected EMAIL_TAKEN: {other:?}"
            )));
        }
    }

    client
        .update_preferences(id, json!({"language": "en", "theme": "dark"}))
        .await?;
    let user = client
        .get(id, &["name", "email", "preferences.language"])
        .await?;
    println!("read back: {user}");

    client.delete(id).await?;
    if client.exists(id).await? {
        return Err(ClientError::Protocol(
            "a deleted user still exists".to_owned(),
        ));
    }
    match client.get(id, &[]).await {
        Err(e) if e.is_not_found() => println!("deleted: {e}"),
        other => return Err(ClientError::Protocol(format!("expected a 404: {other:?}"))),
    }
    Ok(user)
}
