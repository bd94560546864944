//! The OpenAPI schemas of the types that validate on construction (feature `openapi`): each
//! states the rule its `parse` enforces (formats, lengths, patterns, enums), so the document
//! says what the service accepts. Structs derive theirs (`cfg_attr` on the type).
//!
//! Patterns are written for ECMA-262, Python `re` and the Rust `regex` crate alike (so that
//! clients, fuzzers and tests read them the same): ASCII escapes only.

use std::borrow::Cow;

use utoipa::openapi::schema::{
    ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema, SchemaFormat, Type,
};
use utoipa::openapi::{RefOr, schema};
use utoipa::{PartialSchema, ToSchema};

use crate::{
    Amount, AvatarUrl, BoundedText, Currency, Email, Genre, LanguageTag, MaxConcurrentDownloads,
    Metadata, PasswordHash, PaymentId, TaxId, TimeZone, Timestamp, UserId, UserName,
    billing::PaymentMethods, preferences::Genres,
};

/// No control character (what `char::is_control` refuses).
const NO_CONTROL: &str = r"[^\x00-\x1F\x7F-\x9F]";
/// Neither a control character nor white space.
const VISIBLE: &str = r"[^\s\x00-\x1F\x7F-\x9F]";
/// White space that is not a control character (what trimming removes, besides those).
const SPACE: &str = r"[^\S\x00-\x1F\x7F-\x9F]";

fn string() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String)
}

fn format(name: &str) -> Option<SchemaFormat> {
    Some(SchemaFormat::Custom(name.to_owned()))
}

/// Implements `PartialSchema` and `ToSchema` for a type from a schema expression.
macro_rules! schema {
    ($ty:ty, $schema:expr) => {
        impl PartialSchema for $ty {
            fn schema() -> RefOr<Schema> {
                $schema.into()
            }
        }
        impl ToSchema for $ty {}
    };
}

schema!(
    UserId,
    string()
        .format(format("uuid"))
        .description(Some(
            "A user's id: a UUID, printed hyphenated and lower-case."
        ))
        .examples(["0191d9b2-8e1f-7c3a-9a4e-0c1d2e3f4a5b"])
);

schema!(
    Email,
    // No `format: email`: generators take the format's wider grammar (quoted and special
    // characters) over the pattern, and the pattern is what the service accepts.
    string()
        .max_length(Some(Email::MAX))
        .pattern(Some(
            r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.[A-Za-z]{2,63}$",
        ))
        .description(Some(
            "An e-mail address with a dotted domain, stored and returned lower-case.",
        ))
        .examples(["gamer@example.com"])
);

schema!(
    UserName,
    string()
        .min_length(Some(1))
        // Spaces around the name are trimmed before its length (1–100) is counted.
        .pattern(Some(format!(
            r"^{SPACE}*{VISIBLE}(?:{NO_CONTROL}{{0,{}}}{VISIBLE})?{SPACE}*$",
            UserName::MAX - 2
        )))
        .description(Some(
            "A display name: 1–100 characters after trimming, no control characters.",
        ))
        .examples(["John Doe"])
);

schema!(
    PasswordHash,
    string()
        .min_length(Some(8))
        .max_length(Some(255))
        .pattern(Some(
            r"^\$(2[aby]\$|argon2|scrypt\$)[^\s\x00-\x1F\x7F-\x9F]*$"
        ))
        .description(Some(
            "A password hash made by the caller: bcrypt ($2a$/$2b$/$2y$), argon2 ($argon2…) \
             or scrypt ($scrypt$); never a clear-text password.",
        ))
        .examples(["$2b$10$abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWX"])
);

schema!(
    AvatarUrl,
    string()
        .format(format("uri"))
        .max_length(Some(AvatarUrl::MAX))
        .pattern(Some(
            r"^[Hh][Tt][Tt][Pp][Ss]?://[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]{1,4})?([/?#][^\s\x00-\x1F\x7F-\x9F]*)?$",
        ))
        .description(Some(
            "An http or https URL with a host, at most 500 characters."
        ))
        .examples(["https://cdn.example.com/avatars/1.png"])
);

schema!(
    Timestamp,
    string()
        .format(format("date-time"))
        .description(Some(
            "An RFC 3339 instant; returned in UTC with milliseconds, e.g. 2024-01-01T10:00:00.000Z.",
        ))
        .examples(["2024-01-01T10:00:00.000Z"])
);

schema!(
    Currency,
    string()
        .enum_values(Some(Currency::CODES.split_ascii_whitespace()))
        .description(Some("An active ISO 4217 currency code, upper-case."))
        .examples(["RUB"])
);

schema!(
    TaxId,
    string()
        .pattern(Some(r"^([0-9]{10}|[0-9]{12})$"))
        .description(Some(
            "A Russian taxpayer number (INN): 10 digits (organisations) or 12 (individuals).",
        ))
        .examples(["123456789012"])
);

schema!(
    PaymentMethods,
    ArrayBuilder::new()
        .items(crate::PaymentMethod::schema())
        .description(Some("Payment methods; repeats are kept once, in order."))
);

schema!(
    LanguageTag,
    string()
        .max_length(Some(35))
        .pattern(Some(r"^[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*$"))
        .description(Some(
            "A BCP 47 language tag such as `ru`, `en-US` or `zh-Hant-TW`."
        ))
        .examples(["ru"])
);

schema!(
    TimeZone,
    string()
        .enum_values(Some(chrono_tz::TZ_VARIANTS.iter().map(|tz| tz.name())))
        .description(Some("An IANA time zone name such as `Europe/Moscow`."))
        .examples(["Europe/Moscow"])
);

schema!(
    Genre,
    string()
        .min_length(Some(1))
        .max_length(Some(32))
        .pattern(Some(format!(
            r"^{NO_CONTROL}*[^\s\x00-\x1F\x7F-\x9F]{NO_CONTROL}*$"
        )))
        .description(Some("A genre name: 1–32 characters, not blank."))
        .examples(["rpg"])
);

schema!(
    Genres,
    ArrayBuilder::new()
        .items(RefOr::Ref(schema::Ref::from_schema_name("Genre")))
        .max_items(Some(20))
        .description(Some("At most 20 genres."))
);

schema!(
    MaxConcurrentDownloads,
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(1))
        .maximum(Some(10))
        .description(Some("1–10 parallel downloads."))
);

schema!(
    PaymentId,
    string()
        .min_length(Some(1))
        .max_length(Some(128))
        .pattern(Some(r"^[!-~]+$"))
        .description(Some(
            "A payment's id as the Payment service names it: 1–128 printable ASCII characters.",
        ))
        .examples(["pay-0001"])
);

/// Text without U+0000 (PostgreSQL cannot store it).
fn no_nul() -> ObjectBuilder {
    string().pattern(Some(r"^[^\x00]*$"))
}

/// Any JSON value without U+0000 in a string or key: the values of [`Metadata`].
pub struct MetadataValue;

schema!(
    MetadataValue,
    schema::AnyOfBuilder::new()
        .item(no_nul())
        .item(
            ObjectBuilder::new().schema_type(schema::SchemaType::from_iter([
                Type::Number,
                Type::Boolean,
                Type::Null,
            ]))
        )
        .item(ArrayBuilder::new().items(schema::Ref::from_schema_name("MetadataValue")))
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Object)
                .property_names(Some(no_nul()))
                .additional_properties(Some(schema::Ref::from_schema_name("MetadataValue"))),
        )
        .description(Some("Any JSON value; no U+0000 in a string or key."))
);

schema!(
    Metadata,
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .property_names(Some(no_nul()))
        .additional_properties(Some(schema::Ref::from_schema_name("MetadataValue")))
        .description(Some(format!(
            "Free JSON owned by the callers: at most {} bytes serialised, nested at most {} \
             levels, no U+0000 in any string.",
            Metadata::MAX_BYTES,
            Metadata::MAX_DEPTH
        )))
);

// Money as the service prints it: a decimal string with two decimals (a total: zero or more).
schema!(
    Amount,
    string()
        .pattern(Some(r"^[0-9]+\.[0-9]{2}$"))
        .description(Some("An exact amount of money, e.g. \"1234.50\"."))
        .examples(["1234.50"])
);

impl<const MAX: usize> PartialSchema for BoundedText<MAX> {
    fn schema() -> RefOr<Schema> {
        string()
            .max_length(Some(MAX))
            .pattern(Some(format!("^{NO_CONTROL}*$")))
            .description(Some(format!(
                "Text of at most {MAX} characters, no control characters."
            )))
            .into()
    }
}

impl<const MAX: usize> ToSchema for BoundedText<MAX> {
    fn name() -> Cow<'static, str> {
        Cow::Owned(format!("Text{MAX}"))
    }
}

/// The textual UUID the schemas use in patterns.
pub const UUID_PATTERN: &str =
    "[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}";

/// A payment amount as a caller sends it: a positive decimal string or number with at most
/// two decimal places (`#[schema(schema_with)]` of [`crate::request::Payment::amount`]).
pub fn payment_amount() -> Schema {
    let max = Amount::MAX_PAYMENT_MINOR / 100;
    OneOfBuilder::new()
        .item(
            string()
                .pattern(Some(
                    r"^([1-9][0-9]{0,10}(\.[0-9]{1,2})?|0\.([1-9][0-9]?|0[1-9]))$",
                ))
                .examples(["199.99"]),
        )
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Number)
                .exclusive_minimum(Some(0))
                .maximum(Some(max as f64))
                .multiple_of(Some(0.01)),
        )
        .description(Some(format!(
            "A positive amount with at most 2 decimal places, at most {max}: a decimal string \
             (\"199.99\") or a JSON number; never zero."
        )))
        .into()
}

/// An IP address, v4 or v6, or null (`lastLoginIp`).
pub fn ip_address() -> Schema {
    OneOfBuilder::new()
        .item(string().format(format("ipv4")))
        .item(string().format(format("ipv6")))
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .description(Some("An IPv4 or IPv6 address."))
        .into()
}
