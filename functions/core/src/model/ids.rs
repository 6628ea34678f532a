//! Ids and instants, parsed once where they come in: a value of these types is valid.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use utoipa::ToSchema;

use super::request::Invalid;

/// A UTC instant, written as RFC 3339 to the second (`2025-02-28T12:34:56Z`), as in the seeds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, ToSchema)]
#[schema(value_type = String, example = "2025-02-28T12:34:56Z")]
pub struct Timestamp(pub DateTime<Utc>);

impl Timestamp {
    /// Now, to the millisecond: the precision the store keeps.
    pub fn now() -> Self {
        Self(Utc::now().trunc_subsecs(3))
    }

    /// Milliseconds since the epoch: the sortable form used in store keys.
    pub fn millis(&self) -> i64 {
        self.0.timestamp_millis()
    }

    pub fn parse(text: &str) -> Option<Self> {
        DateTime::parse_from_rfc3339(text).ok().map(|t| Self(t.with_timezone(&Utc)))
    }

    /// Seconds since the epoch (a store's `lease_until`), or the epoch itself if out of range.
    pub fn from_epoch(seconds: i64) -> Self {
        Self(DateTime::from_timestamp(seconds, 0).unwrap_or_default())
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.to_rfc3339_opts(SecondsFormat::Secs, true))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // Stored with full precision so that ordering survives a round trip;
        // `Display` (to the second) is what responses show.
        serializer.serialize_str(&self.0.to_rfc3339_opts(SecondsFormat::Millis, true))
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Timestamp::parse(&text).ok_or_else(|| serde::de::Error::custom(format!("not an RFC 3339 time: {text}")))
    }
}

/// A new, upper-case UUID, as the seeds spell job ids.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string().to_uppercase()
}

/// A 12-digit AWS account id.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema)]
#[serde(try_from = "String", into = "String")]
#[schema(value_type = String, pattern = "^[0-9]{12}$", example = "123456789012")]
pub struct AccountId(String);

impl FromStr for AccountId {
    type Err = Invalid;

    fn from_str(text: &str) -> Result<Self, Invalid> {
        match text.len() == 12 && text.bytes().all(|b| b.is_ascii_digit()) {
            true => Ok(Self(text.to_string())),
            false => Err(Invalid(format!("'{text}' is not a 12-digit AWS account id"))),
        }
    }
}

/// A hoop.dev agent's id: a UUID in its 36-character form.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(try_from = "String", into = "String")]
#[schema(
    value_type = String,
    example = "a1b2c3d4-e5f6-7890-abcd-ef1234567890",
    pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)]
pub struct AgentId(String);

impl AgentId {
    /// The agent of jobs no caller named (tag triggers without a default agent, schedules).
    pub fn nil() -> Self {
        Self::from(uuid::Uuid::nil())
    }
}

impl From<uuid::Uuid> for AgentId {
    fn from(id: uuid::Uuid) -> Self {
        Self(id.hyphenated().to_string())
    }
}

impl FromStr for AgentId {
    type Err = Invalid;

    fn from_str(text: &str) -> Result<Self, Invalid> {
        match uuid::Uuid::parse_str(text).is_ok() && text.len() == 36 {
            true => Ok(Self(text.to_string())),
            false => Err(Invalid("must be a UUID such as a1b2c3d4-e5f6-7890-abcd-ef1234567890".into())),
        }
    }
}

macro_rules! string_id {
    ($($id:ident),*) => {$(
        impl $id {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $id {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl TryFrom<String> for $id {
            type Error = Invalid;

            fn try_from(text: String) -> Result<Self, Invalid> {
                text.parse()
            }
        }

        impl From<$id> for String {
            fn from(id: $id) -> String {
                id.0
            }
        }

        impl PartialEq<str> for $id {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }
    )*};
}

string_id!(AccountId, AgentId);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_once_and_are_stored_as_plain_strings() {
        let account: AccountId = "123456789012".parse().unwrap();
        assert_eq!(serde_json::to_value(&account).unwrap(), serde_json::json!("123456789012"));
        for bad in ["12345678901", "12345678901a", "1234567890123", ""] {
            let error = bad.parse::<AccountId>().unwrap_err().0;
            assert_eq!(error, format!("'{bad}' is not a 12-digit AWS account id"));
            assert!(serde_json::from_value::<AccountId>(serde_json::json!(bad)).is_err(), "{bad}");
        }
        let agent: AgentId = serde_json::from_value(serde_json::json!("a1b2c3d4-e5f6-7890-abcd-ef1234567890")).unwrap();
        assert_eq!(agent.as_str(), "a1b2c3d4-e5f6-7890-abcd-ef1234567890");
        assert_eq!(AgentId::nil().as_str(), "00000000-0000-0000-0000-000000000000");
        for bad in ["x", "a1b2c3d4e5f678900abcdef1234567890", "{a1b2c3d4-e5f6-7890-abcd-ef1234567890}"] {
            assert!(bad.parse::<AgentId>().unwrap_err().0.starts_with("must be a UUID"), "{bad}");
        }
    }
}
