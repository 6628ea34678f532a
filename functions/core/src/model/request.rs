//! `POST /dbroles/jobs` (seed 002): the request, its parsing and its validation.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::scope::Scope;
use super::AgentId;

/// A request that cannot be accepted; the message names the field (the engine's type, so its checks need no conversion).
pub use dbroles_engine::Invalid;

fn invalid(message: impl Into<String>) -> Invalid {
    Invalid(message.into())
}

/// `openapi.DBRoleJobStepType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum JobStep {
    CreateConnections,
    SendWebhook,
}

/// `openapi.CreateDBRoleJobAWSProviderSG`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SecurityGroupRequest {
    /// An IPv4 or IPv6 CIDR.
    #[schema(
        example = "192.168.1.0/24",
        pattern = "^(((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])/(3[0-2]|[12]?[0-9])|(([0-9a-fA-F]{1,4}:){7}[0-9a-fA-F]{1,4}|([0-9a-fA-F]{1,4}:){1,7}:|([0-9a-fA-F]{1,4}:){1,6}:[0-9a-fA-F]{1,4}|([0-9a-fA-F]{1,4}:){1,5}(:[0-9a-fA-F]{1,4}){1,2}|([0-9a-fA-F]{1,4}:){1,4}(:[0-9a-fA-F]{1,4}){1,3}|([0-9a-fA-F]{1,4}:){1,3}(:[0-9a-fA-F]{1,4}){1,4}|([0-9a-fA-F]{1,4}:){1,2}(:[0-9a-fA-F]{1,4}){1,5}|[0-9a-fA-F]{1,4}:(:[0-9a-fA-F]{1,4}){1,6}|:((:[0-9a-fA-F]{1,4}){1,7}|:))/(12[0-8]|1[01][0-9]|[1-9]?[0-9]))$"
    )]
    pub ingress_cidr: String,
}

/// `openapi.CreateDBRoleJobAWSProvider`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AwsRequest {
    #[schema(
        example = "arn:aws:rds:us-west-2:123456789012:db:my-instance",
        pattern = "^arn:(aws|aws-cn|aws-us-gov):rds:[a-z0-9-]{1,32}:[0-9]{12}:(db|cluster):[a-zA-Z](-?[a-zA-Z0-9])*$"
    )]
    pub instance_arn: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable)]
    pub default_security_group: Option<SecurityGroupRequest>,
    /// Added by dbroles: without an RDS-managed master secret, set a new master
    /// password (stored in Secrets Manager first) instead of failing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_master_password_reset: bool,
    /// Added by dbroles: take over roles of the same names that dbroles did not
    /// create (their passwords change and what their level does not allow is
    /// removed). Without it such a role is refused, and left as it is.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub adopt_existing_roles: bool,
    /// Added by dbroles: how a run changes each level's password. Absent: the
    /// deployment's default (`RotationStrategy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable)]
    pub rotation: Option<Rotation>,
    /// Added by dbroles: the most connections the job opens to the database
    /// server at once, its login checks included; also how many databases it
    /// provisions at once. Absent: the deployment's (`MaxDbConnections`, 4 by default).
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "connection_bound")]
    #[schema(nullable, minimum = 1, maximum = 32)]
    pub max_db_connections: Option<u32>,
}

/// The largest `max_db_connections` a job or a deployment may ask for.
pub const MAX_DB_CONNECTIONS: u32 = 32;

/// A whole number of connections (also written `4.0`), or none; its range is checked by [`validate_max_db_connections`].
pub fn connection_bound<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<u32>, D::Error> {
    Ok(whole_number(deserializer)?.map(|number| u32::try_from(number).unwrap_or(0)))
}

/// `aws.max_db_connections`: 1 to [`MAX_DB_CONNECTIONS`].
pub fn validate_max_db_connections(bound: Option<u32>) -> Result<(), Invalid> {
    match bound {
        Some(bound) if !(1..=MAX_DB_CONNECTIONS).contains(&bound) => {
            Err(invalid(format!("aws.max_db_connections: must be 1 to {MAX_DB_CONNECTIONS}, not {bound}")))
        }
        _ => Ok(()),
    }
}

/// A request's enum from its name in the JSON (`alternating`, `revoke`), as a
/// setting or a flag gives it; the error lists the names it may be.
fn by_name<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, Invalid> {
    serde_json::from_value(serde_json::Value::String(text.to_string())).map_err(|error| invalid(error.to_string()))
}

/// What a job does with the roles (added by dbroles).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Create or update the roles, rotate their passwords and grant their levels.
    #[default]
    Run,
    /// Retire the roles: logins ended, what they own given to the master, the
    /// roles dropped, their stored credentials and connections removed.
    Revoke,
    /// Change nothing: each role's result lists what a run would change
    /// (`changes`) and what the master may not revoke (`not_revocable`).
    Plan,
}

impl Mode {
    pub fn is_run(&self) -> bool {
        *self == Mode::Run
    }

    /// The mode works on the logins a run makes, under the deployment's rotation
    /// (a revoke retires both logins of each level whatever it is).
    pub fn follows_rotation(self) -> bool {
        self != Mode::Revoke
    }

    /// The mode may change the instance (its master password, its security group).
    pub fn changes_instance(self) -> bool {
        self != Mode::Plan
    }
}

impl FromStr for Mode {
    type Err = Invalid;

    fn from_str(text: &str) -> Result<Self, Invalid> {
        by_name(text)
    }
}

/// How a run changes each level's password (added by dbroles).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Rotation {
    /// One login per level (`<prefix>_ro`), whose password each run changes: a
    /// consumer still holding the old password is refused until it reads the new one.
    #[default]
    Single,
    /// Two logins per level (`<prefix>_ro` and `<prefix>_ro_alt`) with the same
    /// privileges: each run changes the password of the one consumers are not
    /// using, so what they read before a run logs in until the run after it.
    Alternating,
}

impl Rotation {
    pub fn is_alternating(self) -> bool {
        self == Rotation::Alternating
    }
}

impl FromStr for Rotation {
    type Err = Invalid;

    fn from_str(text: &str) -> Result<Self, Invalid> {
        by_name(text)
    }
}

/// `openapi.DBRoleJobVaultProvider`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct VaultRequest {
    /// A KV v2 folder: `<mount>/data/<folders>/`.
    #[schema(example = "dbsecrets/data/", pattern = "^[A-Za-z0-9_-][A-Za-z0-9_.-]*/data/([A-Za-z0-9_-][A-Za-z0-9_.-]*/)*$")]
    pub secret_id: String,
}

/// `openapi.CreateDBRoleJob`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CreateJobRequest {
    pub agent_id: AgentId,
    pub aws: AwsRequest,
    #[schema(example = "prod-postgres-", pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub connection_prefix_name: String,
    /// `null` or absent: none.
    #[serde(default)]
    #[schema(nullable)]
    pub job_steps: Vec<JobStep>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable)]
    pub vault_provider: Option<VaultRequest>,
    /// Added by dbroles: `run` (the default) provisions, `revoke` retires the roles.
    #[serde(default, skip_serializing_if = "Mode::is_run")]
    pub mode: Mode,
    /// Added by dbroles: the levels, databases and schemas the job covers; absent: all.
    #[serde(default, skip_serializing_if = "Scope::is_everything")]
    pub scope: Scope,
}

/// `openapi.CreateDBRoleJobResponse`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CreateJobResponse {
    pub job_id: String,
}

/// A request body: parsed leniently ([`parse_lenient`]), then checked field by field.
pub trait Validated: serde::de::DeserializeOwned {
    /// Every field is valid; the error names the first that is not.
    fn validate(&self) -> Result<(), Invalid>;

    /// Parses and validates a body; every error names the field at fault.
    fn parse(body: &[u8]) -> Result<Lenient<Self>, Invalid> {
        let request: Lenient<Self> = parse_lenient(body)?;
        request.value.validate()?;
        Ok(request)
    }
}

impl Validated for CreateJobRequest {
    fn validate(&self) -> Result<(), Invalid> {
        self.aws.instance_arn.parse::<InstanceArn>().map_err(|e| invalid(format!("aws.instance_arn: {e}")))?;
        validate_security_group(self.aws.default_security_group.as_ref())?;
        validate_max_db_connections(self.aws.max_db_connections)?;
        validate_name("connection_prefix_name", &self.connection_prefix_name, 64)?;
        if let Some(vault) = &self.vault_provider {
            VaultPath::parse(&vault.secret_id)?;
        }
        self.scope.validate()
    }
}

impl CreateJobRequest {
    pub fn has_step(&self, step: JobStep) -> bool {
        self.job_steps.contains(&step)
    }

    pub fn instance_arn(&self) -> InstanceArn {
        // Validated on the way in; a stored request always parses.
        self.aws.instance_arn.parse().unwrap_or_else(|_| InstanceArn::unparsed(&self.aws.instance_arn))
    }
}

/// A request body as hoop.dev's clients send it, and the fields it had that dbroles ignored.
#[derive(Debug)]
pub struct Lenient<T> {
    pub value: T,
    /// Paths of unknown fields (`aws.region`, `roles[0].id`): ignored, and named
    /// back to the caller so a misspelt field is not lost silently.
    pub ignored: Vec<String>,
}

/// Fields whose value is a map of the caller's own keys: never trimmed inside.
const FREE_FORM: [&str; 3] = ["env_vars", "secret", "connection_tags"];

/// Deserialises a request body as Go clients write it: a field that is `null`
/// (an empty slice) or `""` (an unset string) is a field left out, and an
/// unknown field is ignored and reported. Every error names the field at fault;
/// values are checked as strictly as ever by the types' own validation.
pub fn parse_lenient<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<Lenient<T>, Invalid> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(invalid("the request body is empty: send a JSON object"));
    }
    let mut value: serde_json::Value = serde_json::from_slice(body).map_err(|error| {
        let detail = error.to_string();
        invalid(format!("the request body is not valid JSON: {}", detail.split(" at line ").next().unwrap_or(&detail)))
    })?;
    drop_unset(&mut value);
    let mut ignored = Vec::new();
    let mut note = |path: serde_ignored::Path<'_>| ignored.push(field_path(&path));
    let deserializer = serde_ignored::Deserializer::new(value, &mut note);
    let value = serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let path = match error.path().to_string() {
            root if root == "." => String::new(),
            path => format!("{path}."),
        };
        let detail = error.inner().to_string();
        match detail.strip_prefix("missing field `").and_then(|rest| rest.strip_suffix('`')) {
            Some(field) => invalid(format!("{path}{field}: is required (it is missing, null or \"\")")),
            None if path.is_empty() => invalid(detail),
            None => invalid(format!("{}: {detail}", path.trim_end_matches('.'))),
        }
    })?;
    Ok(Lenient { value, ignored })
}

/// A field's path as the error messages write it: `aws.region`, `roles[0].id`.
fn field_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", field_path(parent)),
        Path::Map { parent, key } => match field_path(parent) {
            parent if parent.is_empty() => key.clone(),
            parent => format!("{parent}.{key}"),
        },
        Path::Some { parent } | Path::NewtypeStruct { parent } | Path::NewtypeVariant { parent } => field_path(parent),
    }
}

/// Removes the fields that are `null` or `""`, in every object but the free-form maps.
fn drop_unset(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(fields) => {
            fields.retain(|_, field| !(field.is_null() || field.as_str() == Some("")));
            for (name, field) in fields.iter_mut() {
                if !FREE_FORM.contains(&name.as_str()) {
                    drop_unset(field);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(drop_unset),
        _ => {}
    }
}

/// [`parse_lenient`], for callers that do not report ignored fields.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Invalid> {
    parse_lenient(body).map(|parsed| parsed.value)
}

/// A whole number, also as JSON writes it with a fraction of zero (`325.0`),
/// which JSON Schema's `integer` allows.
pub fn whole_number<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
    use serde::Deserialize;
    let Some(number) = Option::<serde_json::Number>::deserialize(deserializer)? else { return Ok(None) };
    let whole = number.as_i64().or_else(|| number.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15).map(|f| f as i64));
    whole.map(Some).ok_or_else(|| serde::de::Error::custom(format!("expected a whole number, not {number}")))
}

/// `aws.default_security_group`: its `ingress_cidr` is a CIDR.
pub fn validate_security_group(group: Option<&SecurityGroupRequest>) -> Result<(), Invalid> {
    match group {
        Some(group) => {
            group.ingress_cidr.parse::<ipnet::IpNet>().map(|_| ()).map_err(|_| {
                invalid("aws.default_security_group.ingress_cidr: must be an IPv4 or IPv6 CIDR such as 192.168.1.0/24")
            })
        }
        None => Ok(()),
    }
}

/// Names of connections, resources and prefixes: 1 to `max` of `[A-Za-z0-9._-]`.
pub fn validate_name(field: &str, value: &str, max: usize) -> Result<(), Invalid> {
    let ok =
        (1..=max).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(invalid(format!("{field}: must be 1 to {max} characters of A-Z, a-z, 0-9, '.', '_' or '-'")))
    }
}

/// Whether an ARN names a single instance or an Aurora cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ArnKind {
    Db,
    Cluster,
}

/// A parsed RDS instance or cluster ARN: `arn:aws:rds:us-east-1:123456789012:db:my-db`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct InstanceArn {
    pub partition: String,
    pub region: String,
    pub account: String,
    pub kind: ArnKind,
    pub id: String,
    raw: String,
}

impl InstanceArn {
    fn unparsed(raw: &str) -> Self {
        Self {
            partition: String::new(),
            region: String::new(),
            account: String::new(),
            kind: ArnKind::Db,
            id: raw.to_string(),
            raw: raw.to_string(),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.raw
    }
}

impl fmt::Display for InstanceArn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

impl FromStr for InstanceArn {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, String> {
        const SHAPE: &str = "must be an RDS instance or cluster ARN such as arn:aws:rds:us-west-2:123456789012:db:my-instance";
        let parts: Vec<&str> = raw.split(':').collect();
        let [arn, partition, service, region, account, kind, id] = parts.as_slice() else {
            return Err(SHAPE.to_string());
        };
        if *arn != "arn" || !matches!(*partition, "aws" | "aws-cn" | "aws-us-gov") || *service != "rds" {
            return Err(SHAPE.to_string());
        }
        let region_ok = !region.is_empty()
            && region.len() <= 32
            && region.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !region_ok {
            return Err(format!("{SHAPE} (the region '{region}' is not valid)"));
        }
        if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("{SHAPE} (the account must be 12 digits)"));
        }
        let kind = match *kind {
            "db" => ArnKind::Db,
            "cluster" => ArnKind::Cluster,
            _ => return Err(format!("{SHAPE} (the resource type must be 'db' or 'cluster')")),
        };
        // RDS identifiers: letters, digits or hyphens, starting with a letter, no
        // trailing hyphen and no two hyphens in a row (the schema's pattern says
        // the same; RDS's 63-character bound is left to RDS, which finds no longer one).
        let id_ok = id.starts_with(|c: char| c.is_ascii_alphabetic())
            && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !id.ends_with('-')
            && !id.contains("--");
        if !id_ok {
            return Err(format!("{SHAPE} (the identifier '{id}' is not a valid RDS identifier)"));
        }
        Ok(Self {
            partition: partition.to_string(),
            region: region.to_string(),
            account: account.to_string(),
            kind,
            id: id.to_string(),
            raw: raw.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(value: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&value).unwrap()
    }

    fn valid() -> serde_json::Value {
        serde_json::json!({
            "agent_id": "a1b2c3d4-e5f6-7890-abcd-ef1234567890",
            "aws": {"instance_arn": "arn:aws:rds:us-west-2:123456789012:db:my-instance"},
            "connection_prefix_name": "prod-postgres-",
            "job_steps": ["create-connections", "send-webhook"]
        })
    }

    #[test]
    fn seed_request_is_accepted() {
        let request = CreateJobRequest::parse(&body(valid())).unwrap().value;
        assert!(request.has_step(JobStep::SendWebhook));
        assert_eq!(request.instance_arn().id, "my-instance");
    }

    #[test]
    fn unknown_fields_are_ignored_and_named() {
        let mut value = valid();
        value["aws"]["region"] = "us-east-1".into();
        value["roles"] = serde_json::json!([{"id": 1}]);
        let parsed = CreateJobRequest::parse(&body(value)).unwrap();
        assert_eq!(parsed.ignored, ["aws.region", "roles"]);
    }

    #[test]
    fn wrong_type_is_named() {
        let mut value = valid();
        value["job_steps"] = serde_json::json!(["create-connections", "drop-database"]);
        let error = CreateJobRequest::parse(&body(value)).unwrap_err();
        assert!(error.0.starts_with("job_steps[1]: unknown variant `drop-database`"), "{}", error.0);
    }

    #[test]
    fn each_invalid_field_is_named() {
        let cases = [
            ("/agent_id", serde_json::json!("not-a-uuid"), "agent_id:"),
            ("/aws/instance_arn", serde_json::json!("arn:aws:s3:::bucket"), "aws.instance_arn:"),
            ("/aws/instance_arn", serde_json::json!("arn:aws:rds:us-west-2:123:db:x"), "aws.instance_arn:"),
            ("/connection_prefix_name", serde_json::json!("a;drop table"), "connection_prefix_name:"),
            ("/connection_prefix_name", serde_json::json!(""), "connection_prefix_name:"),
            (
                "/aws/default_security_group",
                serde_json::json!({"ingress_cidr": "10.0.0.0/33"}),
                "aws.default_security_group.ingress_cidr:",
            ),
            ("/vault_provider", serde_json::json!({"secret_id": "  "}), "vault_provider.secret_id:"),
            ("/vault_provider", serde_json::json!({"secret_id": "kv/data/a/../b/"}), "vault_provider.secret_id: must be plain"),
            ("/vault_provider", serde_json::json!({"secret_id": "kv/data/a#b/"}), "vault_provider.secret_id: must be plain"),
            ("/vault_provider", serde_json::json!({"secret_id": "kv/data/a?x=1/"}), "vault_provider.secret_id: must be plain"),
            ("/vault_provider", serde_json::json!({"secret_id": "kv/data/a%2F/"}), "vault_provider.secret_id: must be plain"),
            ("/vault_provider", serde_json::json!({"secret_id": "kv/data//a/"}), "vault_provider.secret_id: must be plain"),
            ("/vault_provider", serde_json::json!({"secret_id": "kv/metadata/a/"}), "vault_provider.secret_id: must name a KV"),
        ];
        for (pointer, bad, field) in cases {
            let mut value = valid();
            set(&mut value, pointer, bad.clone());
            let error = CreateJobRequest::parse(&body(value)).unwrap_err();
            assert!(error.0.starts_with(field), "{pointer}={bad}: {}", error.0);
        }
    }

    /// Sets the value at a JSON pointer, creating the last key if it is missing.
    fn set(value: &mut serde_json::Value, pointer: &str, new: serde_json::Value) {
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        value.pointer_mut(parent).unwrap()[key] = new;
    }

    #[test]
    fn truncated_json_is_a_syntax_message() {
        let error = CreateJobRequest::parse(br#"{"agent_id": "a1b2"#).unwrap_err();
        assert!(error.0.starts_with("the request body is not valid JSON"), "{}", error.0);
    }

    #[test]
    fn cluster_arns_and_ipv6_are_accepted() {
        let mut value = valid();
        value["aws"]["instance_arn"] = "arn:aws:rds:eu-west-1:123456789012:cluster:aurora-1".into();
        value["aws"]["default_security_group"] = serde_json::json!({"ingress_cidr": "2001:db8::/32"});
        let request = CreateJobRequest::parse(&body(value)).unwrap().value;
        assert_eq!(request.instance_arn().kind, ArnKind::Cluster);
    }
}

/// A `vault_provider.secret_id`: `<mount>/data/<folder>/.../`, a KV v2 folder the
/// credentials go in. Every segment is a plain name: no empty, `.` or `..`
/// segment, and no `#`, `?`, `%`, space or control character, which would change
/// the request Vault sees.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VaultPath {
    pub mount: String,
    /// The folders below `data/`, each ending with `/` (empty: the mount's root).
    pub folder: String,
}

impl VaultPath {
    pub fn parse(secret_id: &str) -> Result<Self, Invalid> {
        let refuse = |why: &str| invalid(format!("vault_provider.secret_id: {why}, such as dbsecrets/data/team/"));
        let path = secret_id.strip_suffix('/').ok_or_else(|| refuse("must be a folder ending with '/'"))?;
        let segments: Vec<&str> = path.split('/').collect();
        // As the schema's pattern: names of letters, digits, '_', '-' and '.', not starting with '.'.
        let plain = |segment: &&str| {
            segment.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                && segment.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        };
        if !segments.iter().all(plain) {
            return Err(refuse("must be plain names between single slashes (letters, digits, '_', '-', '.'; not '.' or '..')"));
        }
        if segments.len() < 2 || segments[1] != "data" {
            return Err(refuse("must name a KV v2 mount and its data/ folder"));
        }
        let folder: String = segments[2..].iter().map(|segment| format!("{segment}/")).collect();
        Ok(Self { mount: segments[0].to_string(), folder })
    }
}
