//! The shapes of erasure and export: an erased user as a listing shows it, and the document
//! `users.export` answers.

use user_domain::{Amount, Currency, Timestamp, User, UserId};
use utoipa::ToSchema;

/// `users.export`: everything held about one user. The password hash is held but never
/// exported (it is a credential).
#[derive(ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UserExport {
    exported_at: Timestamp,
    /// Profile, preferences, privacy settings, billing info, billing stats, last login (time
    /// and address) and metadata.
    user: User,
    /// The payments behind the billing stats, oldest first.
    payments: Vec<ExportedPayment>,
    /// When the user was deleted; null for a live user.
    deleted_at: Option<Timestamp>,
}

/// One recorded payment.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExportedPayment {
    payment_id: String,
    amount: Amount,
    currency: Currency,
    paid_at: Timestamp,
    recorded_at: Timestamp,
}

/// An erased user in a listing: its personal data is gone, its id and dates are left, so that
/// a copy kept elsewhere drops it.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ErasedUser {
    id: UserId,
    created_at: Timestamp,
    updated_at: Timestamp,
    deleted_at: Timestamp,
    erased_at: Timestamp,
}
