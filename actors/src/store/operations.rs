//! What each operation does against the store: one arm per operation of the table
//! ([`user_domain::operations`]). Reads go through the cache to the pool; writes load the user
//! under a row lock, apply a pure [`edits`] function, and save the user and its events in one
//! transaction; a write with a request key records its reply in the [`ledger`] in that same
//! transaction.
//!
//! [`ledger`]: super::ledger

use serde_json::json;

use super::batch::{Item, batch};
use super::db::Db;
use super::edits;
use super::ledger::Keyed;
use super::writes::{delete, modify, restore};
use super::{creates, erasure, export, history, listing, payments, rows, search};
use user_domain::User;
use user_domain::call::{CallContext, Data, Reply};
use user_domain::error::CoreError;
use user_domain::events::Origin;
use user_domain::request::{
    BatchCreate, BatchLookup, BatchProfiles, GetByEmail, GetProfile, GetUser, MergePatch,
    RecordLogin, RecordPayment, Request, UserRef,
};
use user_domain::views;

pub(super) async fn execute(db: Db, ctx: CallContext, req: Request) -> Result<Reply, CoreError> {
    let origin = Origin::of(&ctx);
    let corr = &origin;
    let caller = ctx.caller.name.as_str();
    let keyed = Keyed::new(&ctx, &req);
    let keyed = keyed.as_ref();
    match req {
        // Boxed, as every write's transaction is (`Db::write`).
        Request::Create(new) => {
            Box::pin(creates::create(&db, new, keyed.cloned(), corr.clone())).await
        }
        Request::Get(GetUser { id, fields }) => {
            let u = db.get(id, caller).await?;
            Ok(Reply::ok(match &fields {
                Some(p) => Data::Value(p.apply(&views::user(&u.user))),
                None => Data::User(u),
            }))
        }
        Request::GetByEmail(GetByEmail {
            email,
            include_credentials: true,
        }) => {
            let (u, hash) = db
                .asked("users", || {
                    rows::fetch_credentials(db.readers.pool(), &db.keys, &email)
                })
                .await?
                .ok_or_else(|| CoreError::UserNotFound(email.to_string()))?;
            Ok(Reply::ok(views::with_credentials(&u, &hash)))
        }
        Request::GetByEmail(GetByEmail {
            email,
            include_credentials: false,
        }) => Ok(Reply::ok(Data::User(
            db.get_by_email(&email, caller).await?,
        ))),
        Request::Exists(UserRef { id }) => {
            let exists = db.find(&[id], caller).await?.iter().any(Option::is_some);
            Ok(Reply::ok(json!({ "exists": exists })))
        }
        Request::RecordLogin(RecordLogin { id, at, ip }) => {
            let edit = |u: &User| Ok(edits::login(u, at, ip, corr));
            modify(&db, id, keyed, edit, views::user).await
        }
        Request::Update(MergePatch { id, patch }) => {
            let edit = |u: &User| edits::update(u, &patch, corr);
            modify(&db, id, keyed, edit, views::user).await
        }
        Request::Delete(UserRef { id }) => delete(&db, id, keyed, corr).await,
        Request::Restore(UserRef { id }) => restore(&db, id, keyed, corr).await,
        Request::Erase(UserRef { id }) => erasure::erase(&db, id, keyed, corr).await,
        Request::Export(UserRef { id }) => Box::pin(export::export(&db, id)).await,
        Request::List(q) => listing::list(&db, &q).await,
        Request::Search(q) => search::find(&db, &q).await,
        Request::History(q) => history::read(&db, &q).await,
        Request::GetProfile(GetProfile {
            id,
            options,
            public_only,
        }) => {
            let u = &db.get(id, caller).await?.user;
            match public_only {
                true => Ok(Reply::ok(views::public_profile(u))),
                false => Data::render(&views::profile(u, options)).map(Reply::ok),
            }
        }
        Request::BatchProfiles(BatchProfiles {
            ids,
            options,
            fields,
        }) => {
            batch(&db, &ids, caller, "profiles", |u| match &fields {
                Some(p) => Item::Value(p.apply(&views::user(&u.user))),
                None => Item::Profile(views::profile(&u.user, options)),
            })
            .await
        }
        Request::BatchLookup(BatchLookup { ids, fields }) => {
            batch(&db, &ids, caller, "data", |u| match &fields {
                Some(p) => Item::Value(p.apply(&views::user(&u.user))),
                None => Item::Raw(u.json()),
            })
            .await
        }
        Request::BatchCreate(BatchCreate { users }) => {
            creates::batch_create(&db, users, keyed, corr).await
        }
        Request::GetBillingInfo(UserRef { id }) => {
            Ok(Reply::ok(views::billing(&db.get(id, caller).await?.user)))
        }
        Request::UpdateBillingInfo(MergePatch { id, patch }) => {
            let edit = |u: &User| edits::billing(u, &patch, corr);
            modify(&db, id, keyed, edit, views::billing).await
        }
        Request::RecordPayment(RecordPayment { id, payment }) => {
            payments::record(&db, id, payment, keyed, corr).await
        }
        Request::GetPreferences(UserRef { id }) => Ok(Reply::ok(views::preferences(
            &db.get(id, caller).await?.user,
        ))),
        Request::UpdatePreferences(MergePatch { id, patch }) => {
            let edit = |u: &User| edits::preferences(u, &patch, corr);
            modify(&db, id, keyed, edit, views::preferences).await
        }
        Request::GetPrivacySettings(UserRef { id }) => Ok(Reply::ok(views::privacy_settings(
            &db.get(id, caller).await?.user,
        ))),
        Request::UpdatePrivacySettings(MergePatch { id, patch }) => {
            let edit = |u: &User| edits::privacy(u, &patch, corr);
            modify(&db, id, keyed, edit, views::privacy_settings).await
        }
    }
}
