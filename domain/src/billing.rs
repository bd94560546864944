use serde::{Deserialize, Serialize};

use super::{Amount, BoundedText, Invalid, Timestamp, string_newtype};

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct BillingInfo {
    pub billing_address: Option<BoundedText<500>>,
    pub payment_methods: PaymentMethods,
    pub currency: Currency,
    pub tax_id: Option<TaxId>,
}

impl BillingInfo {
    /// The fields whose values are never shown outside a user's billing info: sealed at
    /// rest (and in dead letters), never quoted in an error, a header or a log line.
    pub const SECRET_FIELDS: [&str; 2] = ["taxId", "billingAddress"];
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum PaymentMethod {
    Card,
    Qiwi,
    YandexMoney,
    Sbp,
    Mir,
}

/// A set of payment methods, kept in the order given; repeats are dropped.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(from = "Vec<PaymentMethod>")]
pub struct PaymentMethods(Vec<PaymentMethod>);

impl From<Vec<PaymentMethod>> for PaymentMethods {
    fn from(v: Vec<PaymentMethod>) -> Self {
        let mut out = Vec::with_capacity(v.len());
        for m in v {
            if !out.contains(&m) {
                out.push(m);
            }
        }
        Self(out)
    }
}

/// An active ISO 4217 currency code, upper-case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String")]
pub struct Currency(String);
string_newtype!(Currency);

impl Currency {
    pub(crate) const CODES: &'static str = "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL \
        BSD BTN BWP BYN BZD CAD CDF CHF CLP CNY COP CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP \
        GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS KHR KMF \
        KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MYR MZN \
        NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD \
        SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS UAH UGX USD UYU UZS VED VES \
        VND VUV WST XAF XCD XCG XOF XPF YER ZAR ZMW ZWG";

    pub fn parse(s: impl Into<String>) -> Result<Self, Invalid> {
        let s = s.into();
        if s.len() == 3 && Self::CODES.split_ascii_whitespace().any(|c| c == s) {
            Ok(Self(s))
        } else {
            Err(Invalid::new(
                "must be an ISO 4217 currency code such as 'RUB'",
            ))
        }
    }
}

impl Default for Currency {
    fn default() -> Self {
        Self("RUB".to_owned())
    }
}

/// A Russian taxpayer number (INN): 10 digits for organisations, 12 for individuals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String")]
pub struct TaxId(String);
string_newtype!(TaxId);

impl TaxId {
    pub fn parse(s: impl Into<String>) -> Result<Self, Invalid> {
        let s = s.into();
        if matches!(s.len(), 10 | 12) && s.bytes().all(|b| b.is_ascii_digit()) {
            Ok(Self(s))
        } else {
            Err(Invalid::new("must be a Russian INN of 10 or 12 digits"))
        }
    }
}

/// Running totals of a user's payments, kept by the service itself.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BillingStats {
    pub last_payment_at: Option<Timestamp>,
    #[serde(deserialize_with = "Amount::deserialize_total")]
    pub total_spent: Amount,
    pub payments_count: i64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn billing_info_validates_every_field() {
        let ok: BillingInfo = serde_json::from_value(json!({
            "billingAddress": "Москва, ул. Примерная, 123",
            "paymentMethods": ["card", "qiwi", "yandex_money", "card"],
            "currency": "RUB",
            "taxId": "123456789012"
        }))
        .unwrap();
        assert_eq!(ok.payment_methods.0.len(), 3, "repeats dropped");
        for bad in [
            json!({"paymentMethods": ["paypal"]}),
            json!({"currency": "rub"}),
            json!({"currency": "XYZ"}),
            json!({"taxId": "12345"}),
            json!({"taxId": "12345678901a"}),
            json!({"billingAddress": "x".repeat(501)}),
        ] {
            assert!(
                serde_json::from_value::<BillingInfo>(bad.clone()).is_err(),
                "{bad}"
            );
        }
    }
}
