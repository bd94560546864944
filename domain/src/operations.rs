//! The operations of contract section 3, each declared once: its RPC name, its REST routes,
//! its request type, whether it writes, who may call it, and how it is documented. The RPC
//! dispatcher, the REST routes, the OpenAPI document, the ledger's request keys and the
//! client's calls all read this table; a new operation is its request type (in
//! [`crate::request`]), its logic in the store, and one entry here.

mod spec;

pub use spec::{
    Answer, Doc, Effect, Input, Kind, Operation, Permission, Query, Rest, Shape, Verb, action,
    delete, get, ok, patch, post,
};

use crate::NewUser;
use crate::request::{
    BatchCreate, BatchLookup, BatchProfiles, GetByEmail, GetProfile, GetUser, ListUsers,
    MergePatch, RecordLogin, RecordPayment, SearchUsers, UserHistory, UserRef,
};
use Effect::{Read, Write};
use Permission::Caller;
use Shape::{Batch, OneOf, OrPartial, Page, Ref};

const USER: &str = "/api/internal/users/{id}";

spec::operations! {
    Create(NewUser) = {
        rpc: "users.create",
        rest: &[post("/api/internal/users", "NewUser")],
        effect: Write,
        permission: Caller,
        doc: Doc {
            tag: "users",
            summary: "Create a user",
            answers: &[ok(201, "The new user", Ref("User"))],
            errors: &[409],
        },
    },
    Get(GetUser) = {
        rpc: "users.get",
        rest: &[get(USER, &[Query::Fields])],
        effect: Read,
        permission: Caller,
        doc: Doc {
            tag: "users",
            summary: "Read a user (its full public view, or `fields`)",
            answers: &[ok(200, "The user", OrPartial("User"))],
            errors: &[],
        },
    },
    GetByEmail(GetByEmail) = {
        rpc: "users.getByEmail",
        rest: &[get("/api/internal/users/email/{email}", &[Query::Flag(
            "includeCredentials",
            "Add `passwordHash` (credential readers only; 403 for others).",
        )])],
        effect: Read,
        permission: Caller,
        doc: Doc {
            tag: "users",
            summary: "Read a user by e-mail",
            answers: &[ok(
                200,
                "The user (with `passwordHash` when asked by a credential reader)",
                OneOf(&["User", "UserWithCredentials"]),
            )],
            errors: &[],
        },
    },
    Exists(UserRef) = {
        rpc: "users.exists",
        rest: &[get("/api/internal/users/{id}/exists", &[])],
        effect: Read,
        permission: Caller,
        doc: Doc {
            tag: "users",
            summary: "Does a user exist? (200 also when it does not)",
            answers: &[ok(200, "Whether the user exists", Ref("Exists"))],
            errors: &[],
        },
    },
    RecordLogin(RecordLogin) = {
        rpc: "users.recordLogin",
        rest: &[patch("/api/internal/users/{id}/last-login", "RecordLoginBody")],
        effect: Write,
        permission: Caller,
        doc: Doc {
            tag: "users",
            summary: "Record a login (default: now)",
            answers: &[ok(200, "The updated user", Ref("User"))],
            errors: &[],
        },
    },
    Update(MergePatch) = {
        rpc: "users.update",
        rest: &[patch(USER, "UserPatch")],
        effect: Write,
        permission: Caller,
        doc: Doc {
            tag: "users",
            summary: "Update a user (JSON merge patch of name, email, avatarUrl, isActive, metadata)",
            answers: &[ok(200, "The updated user", Ref("User"))],
            errors: &[409],
        },
    },
    Delete(UserRef) = {
        rpc: "users.delete",
        rest: &[delete(USER)],
        effect: Write,
        permission: Caller,
        doc: Doc {
            tag: "users",
            summary: "Delete a user (soft delete)",
            answers: &[Answer { status: 204, description: "Deleted", body: None }],
            errors: &[],
        },
    },
    Restore(UserRef) = {
        rpc: "users.restore",
        rest: &[action("/api/internal/users/{id}/restore")],
        effect: Write,
        permission: Caller,
        doc: Doc {
            tag: "users",
            summary: "Bring back a deleted user, as it was (a live user is answered as it is)",
            answers: &[ok(200, "The restored user", Ref("User"))],
            errors: &[409],
        },
    },
    Erase(UserRef) = {
        rpc: "users.erase",
        rest: &[action("/api/internal/users/{id}/erase")],
        effect: Write,
        permission: Caller,
        doc: Doc {
            tag: "users",
            summary: "Destroy a user's personal data everywhere the service keeps it, live or \
                      deleted (idempotent; payment ids and totals stay, and the e-mail is free)",
            answers: &[Answer { status: 204, description: "Erased, now or before", body: None }],
            errors: &[],
        },
    },
    Export(UserRef) = {
        rpc: "users.export",
        rest: &[get("/api/internal/users/{id}/export", &[])],
        effect: Read,
        permission: Permission::Exporter,
        doc: Doc {
            tag: "users",
            summary: "Everything held about a user, live or deleted, as one document \
                      (credential readers and `EXPORT_READERS` only)",
            answers: &[ok(200, "The user's data", Ref("UserExport"))],
            errors: &[],
        },
    },
    History(UserHistory) = {
        rpc: "users.history",
        rest: &[get("/api/internal/users/{id}/history", &[
            Query::Param("limit", Kind::Count(crate::request::PAGE_MAX), "Entries per page (default 20)."),
            Query::Param("pageToken", Kind::Text(16), "The `nextPageToken` of the page before."),
        ])],
        effect: Read,
        permission: Permission::AuditReader,
        doc: Doc {
            tag: "users",
            summary: "A user's changes, newest first: who changed what, and when \
                      (`AUDIT_READERS` only)",
            answers: &[ok(200, "A page of changes, and the token of the next (null after the last)", Page("HistoryEntry"))],
            errors: &[],
        },
    },
    Search(SearchUsers) = {
        rpc: "users.search",
        rest: &[get("/api/internal/users/search", &[
            Query::Param(
                "q",
                Kind::Text(crate::request::QUERY_MAX_CHARS as u32),
                "A name: those starting with it first, by name, then (from 3 characters) \
                 those containing it, newest first; case-insensitive, `ё` as `е`. Private \
                 profiles are never found by name. Give `q` or `email`.",
            ),
            Query::Param("email", Kind::Text(254), "An exact e-mail, instead of `q`."),
            Query::Param(
                "purpose",
                Kind::OneOf(&["friends"]),
                "`friends`: leave out users who take no friend requests.",
            ),
            Query::Param("limit", Kind::Count(crate::request::PAGE_MAX), "Users per page (default 20)."),
            Query::Param("pageToken", Kind::Text(600), "The `nextPageToken` of the page before."),
        ])],
        effect: Read,
        permission: Caller,
        doc: Doc {
            tag: "users",
            summary: "Find users by name or e-mail (public profiles)",
            answers: &[ok(200, "A page of public profiles, and the token of the next (null after the last)", Page("PublicProfile"))],
            errors: &[],
        },
    },
    List(ListUsers) = {
        rpc: "users.list",
        rest: &[get("/api/internal/users", &[
            Query::Param("isActive", Kind::Bool, "Only active (`true`) or inactive (`false`) users; empty: both."),
            Query::Param(
                "deleted",
                Kind::OneOf(&["live", "deleted", "both"]),
                "Users not deleted (the default), deleted ones, or both.",
            ),
            Query::Param("createdAfter", Kind::Timestamp, "Only users created after this instant."),
            Query::Param("createdBefore", Kind::Timestamp, "Only users created before this instant."),
            Query::Param(
                "updatedSince",
                Kind::Timestamp,
                "Only users changed at or after this instant: a change feed (a deletion is a change).",
            ),
            Query::Param("limit", Kind::Count(crate::request::PAGE_MAX), "Users per page (default 20)."),
            Query::Param("pageToken", Kind::Text(64), "The `nextPageToken` of the page before."),
        ])],
        effect: Read,
        permission: Caller,
        doc: Doc {
            tag: "users",
            summary: "List users, newest first, a page at a time",
            answers: &[ok(200, "A page of users, and the token of the next (null after the last)", Page("ListedUser"))],
            errors: &[],
        },
    },
    GetProfile(GetProfile) = {
        rpc: "users.getProfile",
        rest: &[get("/api/internal/users/{id}/profile", &[
            Query::Flag("includePreferences", "Add the preferences."),
            Query::Flag("includePrivacySettings", "Add the privacy settings."),
            Query::Flag(
                "publicOnly",
                "Only what anyone may see: id, name, avatarUrl, profileVisibility (and \
                 createdAt when public).",
            ),
        ])],
        effect: Read,
        permission: Caller,
        doc: Doc {
            tag: "users",
            summary: "Read a user's profile",
            answers: &[ok(200, "The profile", OneOf(&["Profile", "PublicProfile"]))],
            errors: &[],
        },
    },
    BatchProfiles(BatchProfiles) = {
        rpc: "users.batchProfiles",
        rest: &[post("/api/internal/users/batch/profiles", "BatchProfilesBody")],
        effect: Read,
        permission: Caller,
        doc: Doc {
            tag: "batch",
            summary: "Read many profiles",
            answers: &[ok(
                200,
                "The profiles found, in the order asked, and the ids missing",
                Batch { key: "profiles", item: "Profile" },
            )],
            errors: &[],
        },
    },
    BatchLookup(BatchLookup) = {
        rpc: "users.batchLookup",
        rest: &[
            post("/api/batch/users/lookup", "BatchLookupBody"),
            get("/api/batch/users/lookup", &[Query::Ids, Query::Fields]),
        ],
        effect: Read,
        permission: Caller,
        doc: Doc {
            tag: "batch",
            summary: "Read many users",
            answers: &[ok(
                200,
                "The users found, in the order asked, and the ids missing",
                Batch { key: "data", item: "User" },
            )],
            errors: &[],
        },
    },
    BatchCreate(BatchCreate) = {
        rpc: "users.batchCreate",
        rest: &[post("/api/batch/users/create", "BatchCreateBody")],
        effect: Write,
        permission: Caller,
        doc: Doc {
            tag: "batch",
            summary: "Create many users (each item on its own)",
            answers: &[ok(
                200,
                "One result per item: created, conflict or invalid",
                Ref("BatchCreateAnswer"),
            )],
            errors: &[],
        },
    },
    GetBillingInfo(UserRef) = {
        rpc: "users.getBillingInfo",
        rest: &[get("/api/internal/users/{id}/billing-info", &[])],
        effect: Read,
        permission: Caller,
        doc: Doc {
            tag: "billing",
            summary: "Read a user's billing info and stats",
            answers: &[ok(200, "The billing view", Ref("BillingView"))],
            errors: &[],
        },
    },
    UpdateBillingInfo(MergePatch) = {
        rpc: "users.updateBillingInfo",
        rest: &[patch("/api/internal/users/{id}/billing-info", "BillingInfoPatch")],
        effect: Write,
        permission: Caller,
        doc: Doc {
            tag: "billing",
            summary: "Update a user's billing info (JSON merge patch)",
            answers: &[ok(200, "The updated billing view", Ref("BillingView"))],
            errors: &[],
        },
    },
    RecordPayment(RecordPayment) = {
        rpc: "users.recordPayment",
        rest: &[post("/api/internal/users/{id}/billing-stats", "Payment")],
        effect: Write,
        permission: Caller,
        doc: Doc {
            tag: "billing",
            summary: "Record a payment (idempotent on paymentId)",
            answers: &[
                ok(201, "Recorded: the updated billing view", Ref("BillingView")),
                ok(
                    200,
                    "Already recorded with the same user, amount and currency: the billing view",
                    Ref("BillingView"),
                ),
            ],
            errors: &[409],
        },
    },
    GetPreferences(UserRef) = {
        rpc: "users.getPreferences",
        rest: &[get("/api/internal/users/{id}/preferences", &[])],
        effect: Read,
        permission: Caller,
        doc: Doc {
            tag: "settings",
            summary: "Read a user's preferences",
            answers: &[ok(200, "The preferences", Ref("Preferences"))],
            errors: &[],
        },
    },
    UpdatePreferences(MergePatch) = {
        rpc: "users.updatePreferences",
        rest: &[patch("/api/internal/users/{id}/preferences", "PreferencesPatch")],
        effect: Write,
        permission: Caller,
        doc: Doc {
            tag: "settings",
            summary: "Update a user's preferences (JSON merge patch)",
            answers: &[ok(200, "The full updated preferences", Ref("Preferences"))],
            errors: &[],
        },
    },
    GetPrivacySettings(UserRef) = {
        rpc: "users.getPrivacySettings",
        rest: &[get("/api/internal/users/{id}/privacy-settings", &[])],
        effect: Read,
        permission: Caller,
        doc: Doc {
            tag: "settings",
            summary: "Read a user's privacy settings",
            answers: &[ok(200, "The privacy settings", Ref("PrivacySettings"))],
            errors: &[],
        },
    },
    UpdatePrivacySettings(MergePatch) = {
        rpc: "users.updatePrivacySettings",
        rest: &[patch("/api/internal/users/{id}/privacy-settings", "PrivacyPatch")],
        effect: Write,
        permission: Caller,
        doc: Doc {
            tag: "settings",
            summary: "Update a user's privacy settings (JSON merge patch)",
            answers: &[ok(200, "The full updated privacy settings", Ref("PrivacySettings"))],
            errors: &[],
        },
    },
}

#[cfg(test)]
mod tests;
