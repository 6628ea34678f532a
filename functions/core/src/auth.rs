//! Who is calling: claims from API Gateway's JWT authorizer, or from a token the
//! local server signed itself (HS256).

use std::collections::HashMap;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// The group whose members may write by default (seed 001: "the `admin` group ... grants full access").
pub const ADMIN_GROUP: &str = "admin";

/// The group that may read by default besides admins, as in hoop.dev.
pub const AUDITOR_GROUP: &str = "auditor";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub sub: String,
    pub org: String,
    pub groups: Vec<String>,
}

/// Which claim lists a caller's groups, which group writes, and which read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupPolicy {
    /// The JWT claim holding the groups (`groups`; Cognito's is `cognito:groups`).
    pub claim: String,
    pub admin: String,
    /// The groups that may read besides the admin group; empty: every member of the organisation.
    pub readers: Vec<String>,
}

impl Default for GroupPolicy {
    fn default() -> Self {
        Self { claim: "groups".into(), admin: ADMIN_GROUP.into(), readers: vec![ADMIN_GROUP.into(), AUDITOR_GROUP.into()] }
    }
}

impl GroupPolicy {
    pub fn is_admin(&self, caller: &Caller) -> bool {
        caller.groups.iter().any(|group| *group == self.admin)
    }

    pub fn may_read(&self, caller: &Caller) -> bool {
        self.readers.is_empty() || self.is_admin(caller) || caller.groups.iter().any(|group| self.readers.contains(group))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing bearer token: send 'Authorization: Bearer <token>'")]
    Missing,
    #[error("invalid bearer token: {0}")]
    Invalid(String),
}

/// The `Authorization` header's value, if there is one: exactly one header
/// holding one bearer token. Several headers, comma-joined values (as a proxy
/// joins repeated headers) or several tokens are refused, so no reader of the
/// header can see another token than the one the authorizer verified.
pub fn authorization(headers: &http::HeaderMap) -> Result<Option<&str>, AuthError> {
    let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
    let Some(value) = values.next() else { return Ok(None) };
    if values.next().is_some() {
        return Err(AuthError::Invalid("several Authorization headers: send one".into()));
    }
    let value = value.to_str().map_err(|_| AuthError::Invalid("the Authorization header is not text".into()))?;
    let token = value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")).unwrap_or(value).trim();
    if value.contains(',') || token.contains(char::is_whitespace) {
        return Err(AuthError::Invalid("the Authorization header holds several values: send one bearer token".into()));
    }
    Ok(Some(value))
}

/// Reads a caller from the claims API Gateway's JWT authorizer verified. It hands
/// them over as strings, an array flattened to `[a b]`, which cannot tell the
/// groups `["billing admin"]` from `["billing", "admin"]`: the groups are read from
/// the verified token itself (`bearer`, the `Authorization` header's), and from the
/// flattened claim only when that is unambiguous.
pub fn caller_from_claims(
    claims: &HashMap<String, String>,
    org_claim: &str,
    groups_claim: &str,
    bearer: Option<&str>,
) -> Result<Caller, AuthError> {
    let sub = claims.get("sub").filter(|s| !s.is_empty()).ok_or_else(|| AuthError::Invalid("no 'sub' claim".into()))?;
    let org = claims
        .get(org_claim)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| AuthError::Invalid(format!("no '{org_claim}' claim: the caller belongs to no organisation")))?;
    let groups = match token_claims(bearer).filter(|payload| payload["sub"].as_str() == Some(sub.as_str())) {
        Some(payload) => groups_of(&payload[groups_claim])?,
        None => claims.get(groups_claim).map(|raw| flattened_groups(raw)).transpose()?.unwrap_or_default(),
    };
    Ok(Caller { sub: sub.clone(), org: org.clone(), groups })
}

/// The claims of a JWT (already verified by the authorizer): its payload, decoded.
fn token_claims(bearer: Option<&str>) -> Option<serde_json::Value> {
    use base64::Engine as _;
    let token = bearer?.strip_prefix("Bearer ").or_else(|| bearer?.strip_prefix("bearer "))?.trim();
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// A groups claim as the token has it: an array of strings, one string, or absent.
fn groups_of(claim: &serde_json::Value) -> Result<Vec<String>, AuthError> {
    match claim {
        serde_json::Value::Null => Ok(Vec::new()),
        serde_json::Value::String(group) => Ok(vec![group.clone()]),
        serde_json::Value::Array(items) => items
            .iter()
            .map(|item| item.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| AuthError::Invalid("the groups claim holds something other than strings".into())),
        _ => Err(AuthError::Invalid("the groups claim is neither a list nor a string".into())),
    }
}

/// A groups claim as API Gateway passes it: JSON, one plain group, or `[a]`.
/// `[a b]` is refused: it is one group with a space or two groups.
fn flattened_groups(raw: &str) -> Result<Vec<String>, AuthError> {
    if let Ok(list) = serde_json::from_str::<Vec<String>>(raw) {
        return Ok(list);
    }
    let inner = raw.strip_prefix('[').and_then(|rest| rest.strip_suffix(']')).unwrap_or(raw).trim();
    match inner {
        "" => Ok(Vec::new()),
        one if !one.contains(char::is_whitespace) => Ok(vec![one.to_string()]),
        _ => Err(AuthError::Invalid(
            "the groups claim arrived flattened (`[a b]`) and the token is not in the Authorization header to read it exactly"
                .into(),
        )),
    }
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

    fn claims(groups: &str) -> HashMap<String, String> {
        HashMap::from([
            ("sub".to_string(), "u1".to_string()),
            ("org_id".to_string(), "o1".to_string()),
            ("groups".to_string(), groups.to_string()),
        ])
    }

    fn bearer(payload: serde_json::Value) -> String {
        use base64::Engine as _;
        let encode = |value: &serde_json::Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string());
        format!("Bearer {}.{}.signature", encode(&serde_json::json!({"alg": "RS256"})), encode(&payload))
    }

    #[test]
    fn an_authorization_header_holds_exactly_one_token() {
        let headers = |values: &[&str]| {
            let mut map = http::HeaderMap::new();
            for value in values {
                map.append(http::header::AUTHORIZATION, value.parse().unwrap());
            }
            map
        };
        assert_eq!(authorization(&headers(&[])), Ok(None));
        assert_eq!(authorization(&headers(&["Bearer a.b.c"])), Ok(Some("Bearer a.b.c")));
        for refused in [&["Bearer a.b.c", "Bearer d.e.f"][..], &["Bearer a.b.c, Bearer d.e.f"], &["Bearer a.b.c d.e.f"]] {
            assert!(matches!(authorization(&headers(refused)), Err(AuthError::Invalid(_))), "{refused:?}");
        }
    }

    #[test]
    fn groups_are_read_exactly_from_the_token() {
        let policy = GroupPolicy::default();
        // API Gateway flattens both ["billing admin"] and ["billing", "admin"] to "[billing admin]".
        let one_group = bearer(serde_json::json!({"sub": "u1", "groups": ["billing admin"]}));
        let caller = caller_from_claims(&claims("[billing admin]"), "org_id", "groups", Some(&one_group)).unwrap();
        assert_eq!(caller.groups, ["billing admin"]);
        assert!(!policy.is_admin(&caller) && !policy.may_read(&caller));
        let two_groups = bearer(serde_json::json!({"sub": "u1", "groups": ["billing", "admin"]}));
        let caller = caller_from_claims(&claims("[billing admin]"), "org_id", "groups", Some(&two_groups)).unwrap();
        assert!(policy.is_admin(&caller));
        let cognito = bearer(serde_json::json!({"sub": "u1", "cognito:groups": ["auditor"]}));
        let caller = caller_from_claims(&claims(""), "org_id", "cognito:groups", Some(&cognito)).unwrap();
        assert!(policy.may_read(&caller) && !policy.is_admin(&caller));
    }

    #[test]
    fn a_flattened_claim_is_read_only_when_unambiguous() {
        let caller = caller_from_claims(&claims("[admin]"), "org_id", "groups", None).unwrap();
        assert_eq!(caller.groups, ["admin"]);
        let caller = caller_from_claims(&claims(r#"["admin","sre"]"#), "org_id", "groups", None).unwrap();
        assert_eq!(caller.groups, ["admin", "sre"]);
        let error = caller_from_claims(&claims("[billing admin]"), "org_id", "groups", None).unwrap_err();
        assert!(error.to_string().contains("flattened"), "{error}");
        // A token for someone else is not read.
        let other = bearer(serde_json::json!({"sub": "u2", "groups": ["admin"]}));
        assert!(caller_from_claims(&claims("[billing admin]"), "org_id", "groups", Some(&other)).is_err());
    }

    #[test]
    fn readers_are_configurable() {
        let caller = Caller { sub: "u".into(), org: "o".into(), groups: vec!["sre".into()] };
        assert!(!GroupPolicy::default().may_read(&caller));
        let everyone = GroupPolicy { readers: Vec::new(), ..GroupPolicy::default() };
        assert!(everyone.may_read(&caller) && !everyone.is_admin(&caller));
    }

    #[test]
    fn a_token_signed_with_another_key_is_refused() {
        let ours = LocalTokens::new(vec![1; 32]);
        let theirs = LocalTokens::new(vec![2; 32]);
        let token = theirs.issue("u", "o", &[ADMIN_GROUP.into()], chrono::Duration::hours(1));
        assert!(matches!(ours.verify(Some(&format!("Bearer {token}"))), Err(AuthError::Invalid(_))));
        let token = ours.issue("u", "o", &[], chrono::Duration::hours(1));
        let caller = ours.verify(Some(&format!("Bearer {token}"))).unwrap();
        assert_eq!((caller.org.as_str(), GroupPolicy::default().is_admin(&caller)), ("o", false));
    }

    #[test]
    fn an_expired_token_is_refused() {
        let tokens = LocalTokens::new(vec![1; 32]);
        let token = tokens.issue("u", "o", &[], chrono::Duration::hours(-2));
        assert!(tokens.verify(Some(&format!("Bearer {token}"))).is_err());
        assert_eq!(tokens.verify(None), Err(AuthError::Missing));
    }
}
