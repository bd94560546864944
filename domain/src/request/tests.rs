use super::*;
use serde_json::json;

const ID: &str = "0191d9b2-8e1f-7c3a-9a4e-0c1d2e3f4a5b";

fn field(r: Result<Request, CoreError>) -> String {
    r.unwrap_err()
        .details()
        .first()
        .map(|d| d.field.clone())
        .unwrap_or_default()
}

#[test]
fn every_method_has_a_unique_name() {
    for m in Method::ALL {
        assert_eq!(Method::parse(m.as_str()), Some(m));
    }
    assert_eq!(Method::parse("users.nope"), None);
}

#[test]
fn malformed_uuid_is_a_validation_error() {
    assert_eq!(
        field(Request::parse(
            Method::Get,
            json!({"id": "123"}),
            ParamForm::Json
        )),
        "id"
    );
    assert_eq!(
        field(Request::parse(
            Method::Update,
            json!({"id": "x", "name": "a"}),
            ParamForm::Json
        )),
        "id"
    );
}

#[test]
fn create_rejects_unknown_and_bad_fields() {
    let ok = json!({"name": "John", "email": "J@x.io", "password": "$2b$10$abcdefghijklmnop"});
    assert!(matches!(
        Request::parse(Method::Create, ok, ParamForm::Json),
        Ok(Request::Create(_))
    ));
    let extra = json!({"name": "John", "email": "j@x.io", "password": "$2b$10$abcdefghijklmnop", "role": "admin"});
    assert_eq!(
        field(Request::parse(Method::Create, extra, ParamForm::Json)),
        "role"
    );
    let bad_email = json!({"name": "John", "email": "nope", "password": "$2b$10$abcdefghijklmnop"});
    assert_eq!(
        field(Request::parse(Method::Create, bad_email, ParamForm::Json)),
        "email"
    );
    let wrong_type = json!({"name": 5, "email": "j@x.io", "password": "$2b$10$abcdefghijklmnop"});
    assert_eq!(
        field(Request::parse(Method::Create, wrong_type, ParamForm::Json)),
        "name"
    );
    assert_eq!(
        field(Request::parse(Method::Create, json!([1]), ParamForm::Json)),
        "params"
    );
}

#[test]
fn batch_limits_depend_on_the_form() {
    let ids: Vec<String> = (0..101).map(|_| ID.to_owned()).collect();
    let q = json!({"ids": ids.join(",")});
    assert_eq!(
        field(Request::parse(Method::BatchLookup, q, ParamForm::Query)),
        "ids"
    );
    let j = json!({"ids": ids});
    let Ok(Request::BatchLookup(BatchLookup { ids, .. })) =
        Request::parse(Method::BatchLookup, j, ParamForm::Json)
    else {
        panic!("101 ids in a body are fine");
    };
    assert_eq!(ids.len(), 1, "repeats kept once");
    let many: Vec<&str> = vec![ID; 1001];
    assert_eq!(
        field(Request::parse(
            Method::BatchProfiles,
            json!({"userIds": many}),
            ParamForm::Json
        )),
        "userIds"
    );
    let bad = json!({"ids": [ID, "zzz"]});
    assert_eq!(
        field(Request::parse(Method::BatchLookup, bad, ParamForm::Json)),
        "ids[1]"
    );
}

#[test]
fn empty_pieces_are_bad_ids_but_ignored_fields() {
    let q = json!({"ids": format!("{ID},,{ID}")});
    assert_eq!(
        field(Request::parse(Method::BatchLookup, q, ParamForm::Query)),
        "ids[1]"
    );
    let empty = json!({"ids": ""});
    assert_eq!(
        field(Request::parse(Method::BatchLookup, empty, ParamForm::Query)),
        "ids[0]"
    );
    let f = json!({"id": ID, "fields": "name,,email"});
    assert!(Request::parse(Method::Get, f, ParamForm::Query).is_ok());
}

#[test]
fn batch_create_validates_per_item() {
    let users = json!({"users": [
        {"name": "A", "email": "a@x.io", "password": "$2b$10$abcdefghijklmnop"},
        {"name": "", "email": "b@x.io", "password": "$2b$10$abcdefghijklmnop"},
        7
    ]});
    let Ok(Request::BatchCreate(BatchCreate { users })) =
        Request::parse(Method::BatchCreate, users, ParamForm::Json)
    else {
        panic!("the batch itself is well-formed");
    };
    assert!(users[0].is_ok() && users[1].is_err() && users[2].is_err());
}

#[test]
fn payments_parse_exact_amounts() {
    let p = json!({"id": ID, "paymentId": "pay-1", "amount": "199.99", "currency": "RUB"});
    let Ok(Request::RecordPayment(RecordPayment { payment, .. })) =
        Request::parse(Method::RecordPayment, p, ParamForm::Json)
    else {
        panic!("valid payment");
    };
    assert_eq!(payment.amount.minor(), 19999);
    let neg = json!({"id": ID, "paymentId": "pay-1", "amount": -5});
    assert_eq!(
        field(Request::parse(Method::RecordPayment, neg, ParamForm::Json)),
        "amount"
    );
    let extra = json!({"id": ID, "paymentId": "p", "amount": 1, "tip": 1});
    assert_eq!(
        field(Request::parse(
            Method::RecordPayment,
            extra,
            ParamForm::Json
        )),
        "tip"
    );
}

#[test]
fn query_strings_read_flags() {
    let q = json!({"id": ID, "includePreferences": "true", "publicOnly": "false"});
    let Ok(Request::GetProfile(GetProfile {
        options,
        public_only,
        ..
    })) = Request::parse(Method::GetProfile, q, ParamForm::Query)
    else {
        panic!("valid profile query");
    };
    assert!(options.include_preferences && !options.include_privacy_settings && !public_only);
}

/// Any params for any method: a request or a validation error, never a panic and never
/// another kind of error.
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    /// JSON built from the names and values requests use, nested a few levels.
    fn params() -> impl Strategy<Value = Value> {
        let names = prop::sample::select(vec![
            "id",
            "ids",
            "userIds",
            "fields",
            "email",
            "name",
            "password",
            "avatarUrl",
            "isActive",
            "metadata",
            "lastLoginAt",
            "ipAddress",
            "includePreferences",
            "includePrivacySettings",
            "publicOnly",
            "includeCredentials",
            "users",
            "paymentId",
            "amount",
            "currency",
            "paidAt",
            "language",
            "theme",
            "gameSettings",
            "notifications",
            "profileVisibility",
            "billingAddress",
            "paymentMethods",
            "taxId",
            "preferredGenres",
            "x",
        ]);
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(|f| serde_json::json!(f)),
            prop::sample::select(vec![
                ID,
                "not-a-uuid",
                "a@b.co",
                "$2b$10$abcdefghijklmnopqrstuv",
                "199.99",
                "-1",
                "0.001",
                "true",
                "1,2",
                "name,preferences.theme",
                "",
                "dark",
                "2024-01-01T00:00:00.000Z",
                "::1",
                "RUB",
                "card",
                "1234567890",
            ])
            .prop_map(Value::from),
            ".{0,40}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 48, 8, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                prop::collection::vec((names.clone(), inner), 0..8).prop_map(|kv| {
                    Value::Object(kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
                }),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn never_panics(
            method in prop::sample::select(Method::ALL.to_vec()),
            params in params(),
            query in any::<bool>(),
        ) {
            let form = if query { ParamForm::Query } else { ParamForm::Json };
            if let Err(e) = Request::parse(method, params, form) {
                prop_assert_eq!(e.code(), crate::error::ErrorCode::ValidationFailed, "{}", e);
            }
        }
    }
}

/// What the ledger fingerprints of each write: the shapes stored by earlier versions, so that
/// a retry across an upgrade still matches its first answer.
#[test]
fn write_content_keeps_its_shape() {
    let content = |m: Method, p: Value| Request::parse(m, p, ParamForm::Json).unwrap().content();
    let new = json!({"name": "A", "email": "a@x.io", "password": "$2b$10$abcdefghijklmnop"});
    assert_eq!(content(Method::Create, new.clone()), new);
    assert_eq!(
        content(Method::BatchCreate, json!({"users": [new, 7]})),
        json!([new, {"invalid": CoreError::invalid("", "must be a JSON object").body()}])
    );
    assert_eq!(
        content(
            Method::RecordLogin,
            json!({"id": ID, "ipAddress": "10.0.0.1"})
        ),
        json!({"id": ID, "lastLoginAt": null, "ipAddress": "10.0.0.1"})
    );
    assert_eq!(
        content(
            Method::UpdatePreferences,
            json!({"id": ID, "theme": "dark"})
        ),
        json!({"id": ID, "patch": {"theme": "dark"}})
    );
    assert_eq!(
        content(Method::Delete, json!({"id": ID})),
        json!({"id": ID})
    );
    assert_eq!(
        content(
            Method::RecordPayment,
            json!({"id": ID, "paymentId": "p-1", "amount": "1.50"})
        ),
        json!({"id": ID, "paymentId": "p-1", "amount": Amount::from_minor(150),
               "currency": null, "paidAt": null})
    );
    assert_eq!(content(Method::Get, json!({"id": ID})), Value::Null);
}

#[test]
fn credentials_need_a_credential_reader() {
    let perm = |p: Value| {
        Request::parse(Method::GetByEmail, p, ParamForm::Query)
            .unwrap()
            .permission()
    };
    assert_eq!(
        perm(json!({"email": "a@x.io", "includeCredentials": "true"})),
        Permission::CredentialReader
    );
    assert_eq!(perm(json!({"email": "a@x.io"})), Permission::Caller);
}
