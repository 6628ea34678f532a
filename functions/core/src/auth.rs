//! Who is calling: claims from API Gateway's JWT authorizer, or from a token the
//! local server signed itself (HS256).

use std::collections::HashMap;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// The group whose members may write (seed 001: "the `admin` group ... grants full access").
pub const ADMIN_GROUP: &str = "admin";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub sub: String,
    pub org: String,
    pub groups: Vec<String>,
}

impl Caller {
    pub fn is_admin(&self) -> bool {
        self.groups.iter().any(|group| group == ADMIN_GROUP)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing bearer token: send 'Authorization: Bearer <token>'")]
    Missing,
    #[error("invalid bearer token: {0}")]
    Invalid(String),
}

/// Reads a caller from verified JWT claims (API Gateway hands them over as strings).
/// `groups` may arrive as a JSON array or as API Gateway's flattened `[a b]`.
pub fn caller_from_claims(claims: &HashMap<String, String>, org_claim: &str) -> Result<Caller, AuthError> {
    let sub = claims.get("sub").filter(|s| !s.is_empty()).ok_or_else(|| AuthError::Invalid("no 'sub' claim".into()))?;
    let org = claims
        .get(org_claim)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| AuthError::Invalid(format!("no '{org_claim}' claim: the caller belongs to no organisation")))?;
    let groups = claims.get("groups").map(|raw| parse_groups(raw)).unwrap_or_default();
    Ok(Caller { sub: sub.clone(), org: org.clone(), groups })
}

fn parse_groups(raw: &str) -> Vec<String> {
    if let Ok(list) = serde_json::from_str::<Vec<String>>(raw) {
        return list;
    }
    raw.trim_matches(|c| c == '[' || c == ']')
        .split(|c: char| c == ',' || c.is_whitespace())
        .map(|g| g.trim_matches('"'))
        .filter(|g| !g.is_empty())
        .map(str::to_string)
        .collect()
}

#[derive(Debug, Serialize, Deserialize)]
struct LocalClaims {
    sub: String,
    org_id: String,
    groups: Vec<String>,
    iss: String,
    exp: i64,
}

const LOCAL_ISSUER: &str = "dbroles-local";

/// Signs and checks the local server's tokens with a key kept in its data directory.
#[derive(Clone)]
pub struct LocalTokens {
    key: Vec<u8>,
}

impl LocalTokens {
    pub fn new(key: Vec<u8>) -> Self {
        Self { key }
    }

    /// Loads the key from `dir/token.key`, creating it (32 random bytes, mode 0600) on first use.
    pub fn load_or_create(dir: &std::path::Path) -> std::io::Result<Self> {
        let path = dir.join("token.key");
        match std::fs::read(&path) {
            Ok(key) if key.len() >= 32 => Ok(Self::new(key)),
            _ => {
                private_dir(dir)?;
                let key: [u8; 32] = rand::random();
                write_private(&path, &key)?;
                Ok(Self::new(key.to_vec()))
            }
        }
    }

    pub fn issue(&self, sub: &str, org: &str, groups: &[String], ttl: chrono::Duration) -> String {
        let claims = LocalClaims {
            sub: sub.to_string(),
            org_id: org.to_string(),
            groups: groups.to_vec(),
            iss: LOCAL_ISSUER.to_string(),
            exp: (chrono::Utc::now() + ttl).timestamp(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(&self.key))
            .expect("HS256 signing of plain claims cannot fail")
    }

    /// Checks an `Authorization` header value.
    pub fn verify(&self, authorization: Option<&str>) -> Result<Caller, AuthError> {
        let token = authorization
            .and_then(|value| value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")))
            .map(str::trim)
            .filter(|token| !token.is_empty())
            .ok_or(AuthError::Missing)?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[LOCAL_ISSUER]);
        let data = jsonwebtoken::decode::<LocalClaims>(token, &DecodingKey::from_secret(&self.key), &validation)
            .map_err(|e| AuthError::Invalid(e.to_string()))?;
        let claims = data.claims;
        if claims.sub.is_empty() || claims.org_id.is_empty() {
            return Err(AuthError::Invalid("the token names no subject or organisation".into()));
        }
        Ok(Caller { sub: claims.sub, org: claims.org_id, groups: claims.groups })
    }
}

/// Writes a file only its owner can read.
/// A directory only its owner may enter (0700), made if missing and tightened if not.
pub fn private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(dir)
}

pub fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)?.write_all(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_gateway_flattened_groups_are_read() {
        let claims = HashMap::from([
            ("sub".to_string(), "u1".to_string()),
            ("org_id".to_string(), "o1".to_string()),
            ("groups".to_string(), "[admin sre]".to_string()),
        ]);
        let caller = caller_from_claims(&claims, "org_id").unwrap();
        assert_eq!(caller.groups, ["admin", "sre"]);
        assert!(caller.is_admin());
    }

    #[test]
    fn a_token_signed_with_another_key_is_refused() {
        let ours = LocalTokens::new(vec![1; 32]);
        let theirs = LocalTokens::new(vec![2; 32]);
        let token = theirs.issue("u", "o", &[ADMIN_GROUP.into()], chrono::Duration::hours(1));
        assert!(matches!(ours.verify(Some(&format!("Bearer {token}"))), Err(AuthError::Invalid(_))));
        let token = ours.issue("u", "o", &[], chrono::Duration::hours(1));
        let caller = ours.verify(Some(&format!("Bearer {token}"))).unwrap();
        assert_eq!((caller.org.as_str(), caller.is_admin()), ("o", false));
    }

    #[test]
    fn an_expired_token_is_refused() {
        let tokens = LocalTokens::new(vec![1; 32]);
        let token = tokens.issue("u", "o", &[], chrono::Duration::hours(-2));
        assert!(tokens.verify(Some(&format!("Bearer {token}"))).is_err());
        assert_eq!(tokens.verify(None), Err(AuthError::Missing));
    }
}
