//! Pure JSON logic shared by every operation: the change diff that events carry, the
//! field projection that reads accept, and defaults written once.

mod defaults;
mod diff;
mod projection;

pub use defaults::DefaultJson;
pub use diff::{Changes, diff};
pub use projection::{Projection, allowed_paths};

use serde_json::Value;

/// True when a string anywhere in `value` (keys included) holds U+0000, which PostgreSQL
/// text and jsonb cannot store. Recurses as deep as `value` nests (bounded by the caller).
pub fn has_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

/// True when `value` nests objects and arrays more than `max` levels deep. Recurses at most
/// `max + 1` levels, whatever the input.
pub fn deeper_than(value: &Value, max: usize) -> bool {
    match value {
        Value::Array(items) => max == 0 || items.iter().any(|v| deeper_than(v, max - 1)),
        Value::Object(map) => max == 0 || map.values().any(|v| deeper_than(v, max - 1)),
        _ => false,
    }
}
