//! The corpus `a_corpus_of_hostile_deliveries_is_settled_and_ordinary_calls_go_on` sends: every
//! kind of malformed or hostile delivery, with its properties, that a caller can produce.

use lapin::BasicProperties;
use lapin::types::{AMQPValue, DecimalValue, FieldArray, FieldTable, ShortString};
use serde_json::json;

use super::{authed, exists, long, reply_to, with_headers};
use crate::helpers::{AUTH_KEY, SECRET};

/// Every kind of delivery a careless or hostile caller can produce: (what, body, properties).
/// (RabbitMQ itself refuses a NaN or a short-string header value, an expiration beyond
/// 2^32 ms and an unknown delivery mode, so those never arrive.)
pub(super) fn corpus() -> Vec<(&'static str, Vec<u8>, BasicProperties)> {
    let nested = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let huge = format!(
        r#"{{"method": "users.exists", "params": {{"id": "{}"}}}}"#,
        "a".repeat(1024 * 1024)
    );
    let id_1000 = "i".repeat(1000);
    let nest_long_id =
        json!({"pattern": "users.exists", "data": {"id": uuid::Uuid::new_v4()}, "id": id_1000});
    let every_type = vec![
        ("x-bool", AMQPValue::Boolean(true)),
        ("x-int", AMQPValue::LongLongInt(i64::MIN)),
        ("x-double", AMQPValue::Double(f64::MAX)),
        ("x-small", AMQPValue::ShortShortInt(-3)),
        ("x-float", AMQPValue::Float(f32::MIN)),
        (
            "x-decimal",
            AMQPValue::DecimalValue(DecimalValue {
                scale: 255,
                value: u32::MAX,
            }),
        ),
        ("x-time", AMQPValue::Timestamp(u64::MAX)),
        ("x-void", AMQPValue::Void),
        ("x-bytes", AMQPValue::ByteArray(vec![0u8, 255, 254].into())),
        ("x-table", AMQPValue::FieldTable(FieldTable::default())),
        ("x-array", AMQPValue::FieldArray(FieldArray::default())),
        ("x-correlation-id", AMQPValue::LongLongInt(5)),
    ];
    let mut many = Vec::new();
    for i in 0..500 {
        many.push((format!("x-h{i}"), long(b"v")));
    }
    let many = {
        let mut t = FieldTable::default();
        for (k, v) in many {
            t.insert(ShortString::from(k), v);
        }
        BasicProperties::default().with_headers(t)
    };
    let max_short = "c".repeat(255);
    let mut unknown_field = json!({"method": "users.exists", "params": {}});
    unknown_field["u".repeat(200_000).as_str()] = json!(1);
    vec![
        ("empty body", vec![], reply_to(authed())),
        ("not JSON", b"{oops".to_vec(), reply_to(authed())),
        (
            "invalid UTF-8",
            vec![0xff, 0xfe, 0xfd, b'{'],
            reply_to(authed()),
        ),
        ("JSON array", b"[1,2]".to_vec(), reply_to(authed())),
        ("JSON string", b"\"users.get\"".to_vec(), reply_to(authed())),
        ("JSON null", b"null".to_vec(), reply_to(authed())),
        ("deep nesting", nested.into_bytes(), reply_to(authed())),
        ("over 1 MiB", huge.into_bytes(), reply_to(authed())),
        (
            "method not a string",
            br#"{"method": 7}"#.to_vec(),
            reply_to(authed()),
        ),
        (
            "unknown method",
            br#"{"method": "users.nope"}"#.to_vec(),
            reply_to(authed()),
        ),
        (
            "100 KB method",
            json!({"method": "m".repeat(100_000)})
                .to_string()
                .into_bytes(),
            reply_to(authed()),
        ),
        (
            "params an array",
            br#"{"method": "users.get", "params": [1]}"#.to_vec(),
            reply_to(authed()),
        ),
        (
            "unknown params",
            br#"{"method": "users.create", "params": {"evil": true}}"#.to_vec(),
            reply_to(authed()),
        ),
        (
            "extra top-level field",
            br#"{"method": "users.get", "params": {}, "x": 1}"#.to_vec(),
            reply_to(authed()),
        ),
        (
            "NestJS id of 1000 characters, no correlation id",
            nest_long_id.to_string().into_bytes(),
            reply_to(authed()),
        ),
        (
            "NestJS pattern not a string",
            br#"{"pattern": {"cmd": "x"}, "id": "1"}"#.to_vec(),
            reply_to(authed()),
        ),
        (
            "NestJS emit with bad data, no reply address",
            br#"{"pattern": "users.recordLogin", "data": {"id": "nope"}}"#.to_vec(),
            authed(),
        ),
        (
            "correlation id of 255 characters",
            exists(),
            reply_to(authed().with_correlation_id(ShortString::from(max_short.as_str()))),
        ),
        (
            "correlation id with spaces",
            exists(),
            reply_to(authed().with_correlation_id(ShortString::from("a b\tc"))),
        ),
        (
            "message id of 255 characters",
            exists(),
            reply_to(authed().with_message_id(ShortString::from(max_short.as_str()))),
        ),
        (
            "x-correlation-id of 10 000 characters",
            exists(),
            reply_to(with_headers(vec![
                ("x-api-key", long(AUTH_KEY.as_bytes())),
                ("x-correlation-id", long("r".repeat(10_000).as_bytes())),
            ])),
        ),
        (
            "x-correlation-id of invalid UTF-8",
            exists(),
            reply_to(with_headers(vec![
                ("x-api-key", long(AUTH_KEY.as_bytes())),
                ("x-correlation-id", long(&[0xc3, 0x28, 0xff])),
            ])),
        ),
        (
            "headers of every type",
            exists(),
            reply_to(with_headers(every_type)),
        ),
        (
            "credentials of the wrong types",
            exists(),
            reply_to(with_headers(vec![
                ("x-api-key", AMQPValue::FieldTable(FieldTable::default())),
                (
                    "authorization",
                    AMQPValue::FieldArray(FieldArray::default()),
                ),
                ("x-internal-service", AMQPValue::LongLongInt(1)),
            ])),
        ),
        (
            "a 100 KB bearer token",
            exists(),
            reply_to(with_headers(vec![(
                "authorization",
                long(format!("Bearer {}", "t".repeat(100_000)).as_bytes()),
            )])),
        ),
        (
            "secret with a 10 000 character service name",
            exists(),
            reply_to(with_headers(vec![
                ("x-internal-service", long(SECRET.as_bytes())),
                ("x-service-name", long("s".repeat(10_000).as_bytes())),
            ])),
        ),
        ("500 headers", exists(), reply_to(many)),
        (
            "empty reply address",
            exists(),
            authed().with_reply_to(ShortString::from("")),
        ),
        (
            "reply address of no queue",
            exists(),
            authed().with_reply_to(ShortString::from("no such queue")),
        ),
        (
            "malformed direct reply-to",
            exists(),
            authed().with_reply_to(ShortString::from("amq.rabbitmq.reply-to.garbage")),
        ),
        (
            "sent in 1970, expiring in a minute",
            exists(),
            reply_to(
                authed()
                    .with_timestamp(1)
                    .with_expiration(ShortString::from("60000")),
            ),
        ),
        (
            "sent in the far future",
            exists(),
            reply_to(
                authed()
                    .with_timestamp(u64::MAX)
                    .with_expiration(ShortString::from("60000")),
            ),
        ),
        (
            "expiration of over a day",
            exists(),
            reply_to(authed().with_expiration(ShortString::from("86400001"))),
        ),
        (
            "odd content type, encoding, priority",
            exists(),
            reply_to(
                authed()
                    .with_content_type(ShortString::from(max_short.as_str()))
                    .with_content_encoding(ShortString::from("gzip"))
                    .with_priority(255)
                    .with_delivery_mode(1),
            ),
        ),
        (
            "no credentials, no reply address",
            exists(),
            BasicProperties::default(),
        ),
        (
            "unknown field of 200 000 characters, no credentials, no reply address",
            unknown_field.to_string().into_bytes(),
            BasicProperties::default(),
        ),
        (
            "header of 130 000 bytes, no credentials, no reply address",
            exists(),
            with_headers(vec![("x-big", long(&[b'h'; 130_000]))]),
        ),
    ]
}
