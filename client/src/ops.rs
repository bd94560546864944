//! One typed call per operation of contract section 3: sugar over [`Client::call`], which
//! takes the operation's name and whether it is a read from the operation table
//! ([`user_domain::operations`]). Documents (users, profiles, preferences…) come back as JSON,
//! exactly as the contract shows them; simple answers come back typed.

use serde::Serialize;
use serde_json::{Value, json};
use user_domain::Method;
use uuid::Uuid;

use crate::args::{
    BatchCreateResult, BatchProfilesOptions, Login, NewUser, Payment, ProfileOptions, UserPatch,
};

use crate::client::Client;
use crate::error::ClientError;

/// `{"id": id, ...patch}` for the PATCH operations; the patch must be a JSON object.
fn with_id(id: Uuid, patch: Value) -> Result<Value, ClientError> {
    let Value::Object(mut params) = patch else {
        return Err(ClientError::InvalidArgument(format!(
            "a patch is a JSON object, not {patch}"
        )));
    };
    if params.contains_key("id") {
        return Err(ClientError::InvalidArgument(
            "a patch cannot change the id".to_owned(),
        ));
    }
    params.insert("id".to_owned(), json!(id));
    Ok(Value::Object(params))
}

fn to_params(value: impl Serialize) -> Result<Value, ClientError> {
    serde_json::to_value(value).map_err(|e| ClientError::InvalidArgument(e.to_string()))
}

fn from_data<T: serde::de::DeserializeOwned>(data: Value) -> Result<T, ClientError> {
    serde_json::from_value(data).map_err(|e| ClientError::Protocol(e.to_string()))
}

/// The typed calls. Every write is keyed (retried safely); see [`Client::call_with`] for
/// other keys.
impl Client {
    /// `users.create`: the new user's view (201). `EMAIL_TAKEN` when the email is in use.
    pub async fn create(&self, user: &NewUser) -> Result<Value, ClientError> {
        self.call(Method::Create, to_params(user)?).await
    }

    /// `users.get`: the public view, or only `fields` (plus `id`) when not empty.
    pub async fn get(&self, id: Uuid, fields: &[&str]) -> Result<Value, ClientError> {
        let mut params = json!({"id": id});
        if !fields.is_empty() {
            params["fields"] = json!(fields);
        }
        self.call(Method::Get, params).await
    }

    /// `users.getByEmail`: `None` when there is no such user. `include_credentials` adds
    /// `passwordHash`, for credential readers only (`FORBIDDEN` for others).
    pub async fn get_by_email(
        &self,
        email: &str,
        include_credentials: bool,
    ) -> Result<Option<Value>, ClientError> {
        let params = json!({"email": email, "includeCredentials": include_credentials});
        match self.call(Method::GetByEmail, params).await {
            Err(e) if e.is_not_found() => Ok(None),
            other => other.map(Some),
        }
    }

    /// `users.exists`.
    pub async fn exists(&self, id: Uuid) -> Result<bool, ClientError> {
        let reply = self.call(Method::Exists, json!({"id": id})).await?;
        reply["exists"]
            .as_bool()
            .ok_or_else(|| ClientError::Protocol(format!("no 'exists' in {reply}")))
    }

    /// `users.recordLogin`: the updated user view.
    pub async fn record_login(&self, id: Uuid, login: &Login) -> Result<Value, ClientError> {
        self.call(Method::RecordLogin, with_id(id, to_params(login)?)?)
            .await
    }

    /// `users.update`: name, email, avatarUrl, isActive, metadata; the updated user view.
    pub async fn update(&self, id: Uuid, patch: &UserPatch) -> Result<Value, ClientError> {
        self.call(Method::Update, with_id(id, Value::Object(patch.0.clone()))?)
            .await
    }

    /// `users.delete` (soft).
    pub async fn delete(&self, id: Uuid) -> Result<(), ClientError> {
        self.call(Method::Delete, json!({"id": id})).await.map(drop)
    }

    /// `users.restore`: the deleted user back, as it was (a live one as it is); `EMAIL_TAKEN`
    /// when a live user holds its e-mail now.
    pub async fn restore(&self, id: Uuid) -> Result<Value, ClientError> {
        self.call(Method::Restore, json!({"id": id})).await
    }

    /// `users.erase`: destroys the user's personal data, live or deleted (the payment ids
    /// and totals stay); erasing it again is not an error. The user cannot be restored.
    pub async fn erase(&self, id: Uuid) -> Result<(), ClientError> {
        self.call(Method::Erase, json!({"id": id})).await.map(drop)
    }

    /// `users.export`: everything held about the user, live or deleted, as one document
    /// (`{exportedAt, user, payments, deletedAt}`). For credential readers and
    /// `EXPORT_READERS` only (`FORBIDDEN` for others).
    pub async fn export(&self, id: Uuid) -> Result<Value, ClientError> {
        self.call(Method::Export, json!({"id": id})).await
    }

    /// `users.history`: one page of the user's changes, newest first: `{data,
    /// nextPageToken}`, each entry `{type, changed, previous, current, actor, correlationId,
    /// traceId, at}`. `page` holds any of `limit` (≤ 100) and `pageToken`. For
    /// `AUDIT_READERS` only (`FORBIDDEN` for others).
    pub async fn history(&self, id: Uuid, page: Value) -> Result<Value, ClientError> {
        self.call(Method::History, with_id(id, page)?).await
    }

    /// `users.list`: one page of users, newest first: `{data, nextPageToken}`. `filter` holds
    /// any of `isActive`, `deleted` (`live`, `deleted`, `both`), `createdAfter`,
    /// `createdBefore`, `updatedSince`, `limit` (≤ 100) and `pageToken` (the answer's
    /// `nextPageToken`, for the page after it).
    pub async fn list(&self, filter: Value) -> Result<Value, ClientError> {
        self.call(Method::List, filter).await
    }

    /// `users.search`: one page of public profiles: `{data, nextPageToken}`. `query` holds
    /// `q` (a name: those starting with it first, then those containing it) or `email`, and
    /// any of `purpose` (`friends`), `limit` (≤ 100) and `pageToken`.
    pub async fn search(&self, query: Value) -> Result<Value, ClientError> {
        self.call(Method::Search, query).await
    }

    /// `users.getProfile`.
    pub async fn get_profile(
        &self,
        id: Uuid,
        options: ProfileOptions,
    ) -> Result<Value, ClientError> {
        self.call(Method::GetProfile, with_id(id, to_params(options)?)?)
            .await
    }

    /// `users.batchProfiles` (≤ 1000 ids): `{profiles, missing, stats}`.
    pub async fn batch_profiles(
        &self,
        ids: &[Uuid],
        options: &BatchProfilesOptions,
    ) -> Result<Value, ClientError> {
        let mut params = to_params(options)?;
        params["userIds"] = json!(ids);
        self.call(Method::BatchProfiles, params).await
    }

    /// `users.batchLookup` (≤ 1000 ids): `{data, missing, stats}`, in the order asked.
    pub async fn batch_lookup(&self, ids: &[Uuid], fields: &[&str]) -> Result<Value, ClientError> {
        let mut params = json!({"ids": ids});
        if !fields.is_empty() {
            params["fields"] = json!(fields);
        }
        self.call(Method::BatchLookup, params).await
    }

    /// `users.batchCreate` (≤ 1000 users): each created, or why not.
    pub async fn batch_create(&self, users: &[NewUser]) -> Result<BatchCreateResult, ClientError> {
        let data = self
            .call(Method::BatchCreate, json!({"users": users}))
            .await?;
        from_data(data)
    }

    /// `users.getBillingInfo`: `{userId, name, email, billingInfo, billingStats}`.
    pub async fn get_billing_info(&self, id: Uuid) -> Result<Value, ClientError> {
        self.call(Method::GetBillingInfo, json!({"id": id})).await
    }

    /// `users.updateBillingInfo`: `patch` is a JSON merge patch of `billingInfo`
    /// (`billingAddress`, `paymentMethods`, `currency`, `taxId`); the billing view.
    pub async fn update_billing_info(&self, id: Uuid, patch: Value) -> Result<Value, ClientError> {
        self.call(Method::UpdateBillingInfo, with_id(id, patch)?)
            .await
    }

    /// `users.recordPayment`: adds to `totalSpent`; the billing view. Recording the same
    /// `paymentId` again changes nothing (`CONFLICT` if it differs).
    pub async fn record_payment(&self, id: Uuid, payment: &Payment) -> Result<Value, ClientError> {
        self.call(Method::RecordPayment, with_id(id, to_params(payment)?)?)
            .await
    }

    /// `users.getPreferences`: the full preferences, defaults filled in.
    pub async fn get_preferences(&self, id: Uuid) -> Result<Value, ClientError> {
        self.call(Method::GetPreferences, json!({"id": id})).await
    }

    /// `users.updatePreferences`: `patch` is a JSON merge patch of the preferences
    /// (e.g. `{"language": "en", "gameSettings": {"autoDownload": true}}`); the full
    /// preferences after it.
    pub async fn update_preferences(&self, id: Uuid, patch: Value) -> Result<Value, ClientError> {
        self.call(Method::UpdatePreferences, with_id(id, patch)?)
            .await
    }

    /// `users.getPrivacySettings`.
    pub async fn get_privacy_settings(&self, id: Uuid) -> Result<Value, ClientError> {
        self.call(Method::GetPrivacySettings, json!({"id": id}))
            .await
    }

    /// `users.updatePrivacySettings`: `patch` is a JSON merge patch of the privacy settings
    /// (e.g. `{"profileVisibility": "friends"}`); the settings after it.
    pub async fn update_privacy_settings(
        &self,
        id: Uuid,
        patch: Value,
    ) -> Result<Value, ClientError> {
        self.call(Method::UpdatePrivacySettings, with_id(id, patch)?)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::BatchItemStatus;

    #[test]
    fn arguments_serialise_under_the_contract_names() {
        let id = Uuid::nil();
        assert_eq!(
            to_params(NewUser::new("A", "a@example.com", "h")).unwrap(),
            json!({"name": "A", "email": "a@example.com", "password": "h"})
        );
        assert_eq!(
            with_id(id, to_params(Login::now().ip("10.0.0.1")).unwrap()).unwrap(),
            json!({"ipAddress": "10.0.0.1", "id": id})
        );
        assert_eq!(
            UserPatch::new().name("B").avatar_url(None).active(false).0,
            json!({"name": "B", "avatarUrl": null, "isActive": false})
                .as_object()
                .cloned()
                .unwrap()
        );
        assert_eq!(
            to_params(ProfileOptions::default().public_only()).unwrap(),
            json!({"includePreferences": false, "includePrivacySettings": false, "publicOnly": true})
        );
        assert_eq!(
            to_params(BatchProfilesOptions::default().fields(&["name"])).unwrap(),
            json!({"includePreferences": false, "includePrivacySettings": false, "fields": ["name"]})
        );
        assert_eq!(
            to_params(Payment::new("p-1", "14.99").currency("RUB")).unwrap(),
            json!({"paymentId": "p-1", "amount": "14.99", "currency": "RUB"})
        );
        assert!(matches!(
            with_id(id, json!([1])),
            Err(ClientError::InvalidArgument(_))
        ));
        assert!(matches!(
            with_id(id, json!({"id": "other"})),
            Err(ClientError::InvalidArgument(_))
        ));
    }

    #[test]
    fn batch_create_answers_read_typed() {
        let id = Uuid::new_v4();
        let data = json!({"results": [
            {"index": 0, "status": "created", "id": id},
            {"index": 1, "status": "conflict", "error": {"code": "EMAIL_TAKEN", "message": "…"}},
        ], "stats": {"requested": 2, "created": 1, "conflict": 1, "invalid": 0}});
        let r: BatchCreateResult = from_data(data).unwrap();
        assert_eq!(r.results[0].id, Some(id));
        assert_eq!(r.results[1].status, BatchItemStatus::Conflict);
        assert_eq!(r.stats.created, 1);
    }
}
