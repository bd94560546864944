use serde::{Deserialize, Serialize};

use super::{Invalid, string_newtype};

/// An e-mail address, stored lower-case so that uniqueness is case-insensitive.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String")]
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
                // The whole address is bounded (MAX); its local part is not held to
                // RFC 5321's 64, as the documented grammar says.
                .with_long_local_parts()
                // Users' addresses are on the public internet: the domain has a dot.
                .with_required_tld(),
        )
        .map_err(|_| Invalid::new("must be a valid email address"))?;
        // Lower-cased in place when it is ASCII, as nearly every address is (and every one
        // read back, once per row of a page).
        let mut address = String::from(parsed);
        match address.is_ascii() {
            true => address.make_ascii_lowercase(),
            false => address = address.to_lowercase(),
        }
        Ok(Self(address))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn plain_addresses_are_accepted_and_lower_cased(
            local in "[A-Za-z0-9][A-Za-z0-9._+-]{0,30}[A-Za-z0-9]",
            host in "[A-Za-z0-9]{1,20}",
            tld in "[A-Za-z]{2,6}",
        ) {
            prop_assume!(!local.contains(".."));
            let raw = format!("{local}@{host}.{tld}");
            let email = Email::parse(&raw).unwrap();
            prop_assert_eq!(email.as_ref(), raw.to_lowercase());
            prop_assert_eq!(Email::parse(email.as_ref()).unwrap(), email.clone(), "parsing is idempotent");
        }

        #[test]
        fn anything_without_an_at_sign_is_refused(s in "[^@]{0,64}") {
            prop_assert!(Email::parse(&s).is_err());
        }
    }

    #[test]
    fn emails_are_lower_cased() {
        assert_eq!(
            Email::parse("John.Doe@Example.COM").unwrap().as_ref(),
            "john.doe@example.com"
        );
        // Past ASCII, as Unicode lower-cases it.
        assert_eq!(
            Email::parse("ÄNNE.Ёлка@Example.COM").unwrap().as_ref(),
            "änne.ёлка@example.com"
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

    #[test]
    fn a_long_local_part_is_accepted_within_the_whole_bound() {
        let address = format!("{}@example.com", "a".repeat(100));
        assert_eq!(Email::parse(&address).unwrap().as_ref(), address);
    }
}
