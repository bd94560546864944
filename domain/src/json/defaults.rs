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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use serde::{Serialize, Serializer};

    use super::DefaultJson;

    static WRITTEN: AtomicUsize = AtomicUsize::new(0);

    /// Counts how often it is serialised.
    #[derive(Default, PartialEq)]
    struct Counted(u8);

    impl Serialize for Counted {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            WRITTEN.fetch_add(1, Ordering::SeqCst);
            s.serialize_u8(self.0)
        }
    }

    /// The default is serialised once, when the text is made; another value every time.
    #[test]
    fn the_default_is_written_once() {
        let once = DefaultJson::<Counted>::new();
        assert_eq!(WRITTEN.load(Ordering::SeqCst), 1);
        let write = |v: &Counted| {
            let mut out = Vec::new();
            once.write(v, &mut serde_json::Serializer::new(&mut out))
                .unwrap();
            String::from_utf8(out).unwrap()
        };
        assert_eq!(write(&Counted(0)), "0");
        assert_eq!(write(&Counted(0)), "0");
        assert_eq!(
            WRITTEN.load(Ordering::SeqCst),
            1,
            "the default was written again"
        );
        assert_eq!(write(&Counted(7)), "7");
        assert_eq!(WRITTEN.load(Ordering::SeqCst), 2);
    }
}
