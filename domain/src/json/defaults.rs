use serde::{Serialize, Serializer};
use serde_json::value::RawValue;

/// A type's default and its JSON, written once. Most users never change their preferences
/// or privacy settings, and writing those is nearly half of writing a user (their keys are
/// most of its strings): a value equal to the default is written as this text instead.
pub struct DefaultJson<T> {
    value: T,
    json: Option<Box<RawValue>>,
}

impl<T: Default + PartialEq + Serialize> DefaultJson<T> {
    pub fn new() -> Self {
        let value = T::default();
        let json = serde_json::value::to_raw_value(&value).ok();
        Self { value, json }
    }

    /// Writes `value` as `serialize_with` does: the text written once when it is the default.
    pub fn write<S: Serializer>(&self, value: &T, s: S) -> Result<S::Ok, S::Error> {
        match &self.json {
            Some(json) if *value == self.value => json.serialize(s),
            _ => value.serialize(s),
        }
    }
}

impl<T: Default + PartialEq + Serialize> Default for DefaultJson<T> {
    fn default() -> Self {
        Self::new()
    }
}
