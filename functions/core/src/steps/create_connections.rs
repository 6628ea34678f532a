//! The create-connections step: registers a resource for the instance with one connection per provisioned role; never a password.

use std::collections::BTreeMap;

use super::job::{instance, load, secret_store};
use super::{ErrorType, State, StepError};
use crate::deps::Deps;
use crate::engine::{self, Family, Level};
use crate::model::job::{JobRecord, Phase, RoleResult, SecretsProvider};
use crate::model::resource::{ResourceInput, RoleInput, DB_ARN_TAG};
use crate::secrets::{SecretRef, SecretStore};

/// Registers a resource for the instance with one connection per provisioned role.
pub(super) async fn run(deps: &Deps, state: State) -> Result<State, StepError> {
    let record = load(deps, &state).await?;
    let instance = instance(deps, &record).await?;
    let secrets = secret_store(deps, &record)?;
    let family = Family::of(&instance.engine)
        .ok_or_else(|| StepError::new(ErrorType::UnsupportedEngine, engine::unsupported(&instance.engine)))?;
    let subtype = match family {
        Family::Postgres => "postgres",
        Family::MySql => "mysql",
    };
    let results = record.job.status.as_ref().map(|s| s.result.clone()).unwrap_or_default();
    let mut roles = Vec::new();
    for result in results.iter().filter(|r| r.status == Phase::Completed) {
        let Some(name) = connection_name(deps, &record, result) else { continue };
        let secret_ref =
            SecretRef { user: result.user_role.clone(), ..SecretRef::for_instance(&instance, record.org(), record.id()) };
        let secret = connection_secret(secrets.as_ref(), &secret_ref).await?;
        roles.push(RoleInput {
            name,
            kind: "database".into(),
            subtype: Some(subtype.into()),
            agent_id: Some(record.request.agent_id.to_string()),
            secret,
            connection_tags: BTreeMap::from([(DB_ARN_TAG.to_string(), instance.arn.clone())]),
            default_database: Some(instance.db_name.clone()).filter(|name| !name.is_empty()),
            managed_by: "dbroles".into(),
            ..RoleInput::default()
        });
    }
    if roles.is_empty() {
        return Ok(state);
    }
    let input = ResourceInput {
        env_vars: BTreeMap::new(),
        name: instance.identifier.clone(),
        kind: "database".into(),
        agent_id: Some(record.request.agent_id.to_string()),
        roles,
        subtype: Some(subtype.into()),
    };
    input.validate().map_err(|invalid| StepError::new(ErrorType::InvalidInput, invalid.0))?;
    let previous = deps.resources.get_resource(record.org(), &instance.identifier).await?;
    if let Some(previous) = previous.as_ref().filter(|previous| !previous.made_by_dbroles_for(&instance.arn)) {
        return Err(StepError::new(
            ErrorType::ProvisioningFailed,
            format!(
                "the resource {} exists and dbroles did not create it for {}: dbroles does not replace it",
                previous.name, instance.arn
            ),
        ));
    }
    deps.resources.put_resource(&input.into_resource(record.org(), previous.as_ref())).await?;
    Ok(state)
}

/// The connection of a role's result: `<connection_prefix_name><level>`, for a
/// role of the deployment's prefix.
pub(super) fn connection_name(deps: &Deps, record: &JobRecord, result: &RoleResult) -> Option<String> {
    let level = Level::ALL.into_iter().find(|level| level.user(&deps.settings.role_prefix) == result.user_role)?;
    Some(format!("{}{}", record.request.connection_prefix_name, level.suffix()))
}

/// The connection variables hoop.dev's agents read, each with the stored key it comes from.
const CONNECTION_KEYS: [(&str, &str); 5] =
    [("envvar:HOST", "HOST"), ("envvar:PORT", "PORT"), ("envvar:USER", "USER"), ("envvar:PASS", "PASSWORD"), ("envvar:DB", "DB")];

/// A connection's secret as hoop.dev's agents read it, every value base64: references
/// into the store (`_aws:<secret>:<key>`, `_vaultkv2:...`). For the `database`
/// provider the values, but the password only as a reference
/// (`_dbroles:<secret>:PASSWORD`): the resource item is not sealed as the
/// credentials are, and the API function may read it, so no password is copied
/// there. Under the alternating rotation the user is a reference too
/// (`_dbroles:<secret>:USER`), since each run changes it.
async fn connection_secret(secrets: &dyn SecretStore, secret_ref: &SecretRef) -> Result<BTreeMap<String, String>, StepError> {
    use base64::Engine as _;
    let encode = |value: &str| base64::engine::general_purpose::STANDARD.encode(value);
    let secret_id = secrets.secret_id(secret_ref);
    let reference = |scheme: &str, key: &str| encode(&format!("{scheme}:{secret_id}:{key}"));
    let all = |scheme: &str| CONNECTION_KEYS.iter().map(|(name, key)| (name.to_string(), reference(scheme, key))).collect();
    match secrets.provider() {
        SecretsProvider::AwsSecretsManager => Ok(all("_aws")),
        SecretsProvider::Vault => Ok(all("_vaultkv2")),
        SecretsProvider::Database => {
            let credentials = secrets.read(&secret_id).await?.ok_or_else(|| {
                StepError::new(ErrorType::ProvisioningFailed, format!("no stored credentials for {}", secret_ref.user))
            })?;
            let port = credentials.port.to_string();
            let password = reference("_dbroles", "PASSWORD");
            // Under the alternating rotation the login changes with the password: both are read at connect time.
            let user = match credentials.logins.is_empty() {
                true => encode(&credentials.user),
                false => reference("_dbroles", "USER"),
            };
            let values = [encode(&credentials.host), encode(&port), user, password, encode(&credentials.db)];
            Ok(CONNECTION_KEYS.iter().zip(values).map(|((name, _), value)| (name.to_string(), value)).collect())
        }
    }
}
