//! A user projected to the `fields` a caller asked for, and the `fields` list itself; the
//! user with its credentials.

use user_domain::User;
use utoipa::PartialSchema;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{
    AnyOfBuilder, ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema, Type,
};

use super::reference;

const FIELDS_DESCRIPTION: &str = "Return only these fields (top-level names or dotted paths \
     such as `preferences.theme`); `id` is always returned; empty names are ignored.";

/// `fields` in a query: top-level fields and dotted paths into the structured parts of a user.
pub fn fields_schema() -> Schema {
    ArrayBuilder::new()
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(
                    user_domain::json::allowed_paths()
                        .iter()
                        .cloned()
                        .chain([String::new()]),
                )),
        )
        .description(Some(FIELDS_DESCRIPTION))
        .into()
}

/// `fields` in a body: an array, or one comma-separated string.
pub fn fields_body_schema() -> Schema {
    let names: Vec<String> = user_domain::json::allowed_paths()
        .iter()
        .map(|p| p.replace('.', "\\."))
        .collect();
    let one = format!("({})", names.join("|"));
    AnyOfBuilder::new()
        .item(fields_schema())
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(format!(r"^\s*({one}\s*)?(,\s*({one}\s*)?)*$")))
                .description(Some("Comma-separated names.")),
        )
        .description(Some(FIELDS_DESCRIPTION))
        .into()
}

/// A user with only the fields a `fields` list asked for: `id` and any of [`User`]'s
/// fields, the structured ones possibly in part.
pub fn partial_user() -> Schema {
    let mut user = match User::schema() {
        RefOr::T(Schema::Object(o)) => o,
        _ => return Schema::default(),
    };
    user.required = vec!["id".to_owned()];
    // A projected part holds only the paths asked for (`null` where the user has none).
    for name in [
        "preferences",
        "privacySettings",
        "billingInfo",
        "billingStats",
    ] {
        let part = ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::SchemaType::from_iter([
                Type::Object,
                Type::Null,
            ]))
            .description(Some(format!(
                "The parts of `{name}` asked for (see `User`), `null` where there is none."
            )));
        user.properties.insert(name.to_owned(), part.into());
    }
    user.description = Some(
        "A user projected to the `fields` asked for: `id` and the named fields only.".to_owned(),
    );
    Schema::Object(user)
}

/// `users.getByEmail?includeCredentials=true`: the user plus `passwordHash`.
pub fn user_with_credentials() -> Schema {
    let mut user = match User::schema() {
        RefOr::T(Schema::Object(o)) => o,
        _ => return Schema::default(),
    };
    user.properties
        .insert("passwordHash".to_owned(), reference("PasswordHash"));
    user.required.push("passwordHash".to_owned());
    user.description =
        Some("The user with its password hash (credential readers only).".to_owned());
    Schema::Object(user)
}

/// A user as a listing answers it: `deletedAt` on a deleted one; an erased one is only its
/// id and dates.
pub fn listed_user() -> Schema {
    let mut user = match User::schema() {
        RefOr::T(Schema::Object(o)) => o,
        _ => return Schema::default(),
    };
    user.properties
        .insert("deletedAt".to_owned(), reference("Timestamp"));
    user.description =
        Some("A user of a listing; a deleted one says when (`deletedAt`).".to_owned());
    OneOfBuilder::new()
        .item(Schema::Object(user))
        .item(reference("ErasedUser"))
        .into()
}

/// A full user or, with `fields`, a projected one.
pub fn user_or_partial(full: &str) -> RefOr<Schema> {
    AnyOfBuilder::new()
        .item(reference(full))
        .item(reference("PartialUser"))
        .into()
}
