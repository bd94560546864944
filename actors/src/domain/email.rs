use serde::{Deserialize, Serialize};

use super::{Invalid, string_newtype};

/// An e-mail address, stored lower-case so that uniqueness is case-insensitive.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Email(String);
string_newtype!(Email);

impl Email {
    pub const MAX: usize = 255;

    pub fn parse(s: impl AsRef<str>) -> Result<Self, Invalid> {
        let s = s.as_ref().trim();
        if s.len() > Self::MAX {
            return Err(Invalid::new(format!(
                "must be at most {} characters",
                Self::MAX
            )));
        }
        let parsed = email_address::EmailAddress::parse_with_options(
            s,
            email_address::Options::default()
                .without_display_text()
                .without_domain_literal()
                // Users' addresses are on the public internet: the domain has a dot.
                .with_required_tld(),
        )
        .map_err(|_| Invalid::new("must be a valid email address"))?;
        Ok(Self(parsed.as_str().to_lowercase()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_lower_cased() {
        assert_eq!(
            Email::parse("John.Doe@Example.COM").unwrap().as_ref(),
            "john.doe@example.com"
        );
    }

    #[test]
    fn bad_emails_are_refused() {
        for bad in [
            "",
            "plain",
            "@example.com",
            "a@",
            "a@b",
            "a b@example.com",
            "John <john@example.com>",
            "a@[127.0.0.1]",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} accepted");
        }
        let long = format!("{}@example.com", "a".repeat(250));
        assert!(Email::parse(long).is_err());
    }
}
