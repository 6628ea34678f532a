//! Resources (seed 003): a database and one connection ("role") per database role.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::model::request::{validate_name, whole_number, Invalid};
use crate::model::Timestamp;

/// A role (connection) as a client sends it. `secret` is write-only.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RoleInput {
    #[schema(pattern = "^[A-Za-z0-9._-]{1,128}$")]
    pub name: String,
    #[serde(rename = "type")]
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable, pattern = "^([A-Za-z0-9._-]{1,64})?$")]
    pub subtype: Option<String>,
    /// A UUID; `""` or `null` for none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable, pattern = "^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})?$")]
    pub agent_id: Option<String>,
    #[serde(default)]
    #[schema(nullable)]
    pub command: Vec<String>,
    /// Write-only: stored, never returned.
    #[serde(default)]
    #[schema(nullable)]
    pub secret: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "whole_number")]
    #[schema(nullable)]
    pub access_max_duration: Option<i64>,
    #[serde(default)]
    #[schema(nullable)]
    pub attributes: Vec<String>,
    #[serde(default)]
    #[schema(nullable)]
    pub connection_tags: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable)]
    pub default_database: Option<String>,
    #[serde(default)]
    #[schema(nullable)]
    pub force_approve_groups: Vec<String>,
    #[serde(default)]
    #[schema(nullable)]
    pub guardrail_rules: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable)]
    pub jira_issue_template_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "whole_number")]
    #[schema(nullable)]
    pub jit_access_duration_sec: Option<i64>,
    #[serde(default)]
    #[schema(nullable)]
    pub managed_by: String,
    #[serde(default)]
    #[schema(nullable)]
    pub mandatory_metadata_fields: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "whole_number")]
    #[schema(nullable)]
    pub min_review_approvals: Option<i64>,
    #[serde(default)]
    #[schema(nullable)]
    pub redact_enabled: bool,
    #[serde(default)]
    #[schema(nullable)]
    pub redact_types: Vec<String>,
    #[serde(default)]
    #[schema(nullable)]
    pub reviewers: Vec<String>,
    #[serde(default)]
    #[schema(nullable)]
    pub tags: Vec<String>,
}

/// `POST /resources` and `PUT /resources/{name}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ResourceInput {
    #[serde(default)]
    #[schema(nullable)]
    pub env_vars: BTreeMap<String, String>,
    #[schema(example = "my-resource", pattern = "^[A-Za-z0-9._-]{1,128}$")]
    pub name: String,
    #[serde(rename = "type")]
    #[schema(example = "database", pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub kind: String,
    /// A UUID; `""` or `null` for none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable, pattern = "^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})?$")]
    pub agent_id: Option<String>,
    /// Taken by `POST`; `PUT` never changes a resource's connections.
    #[serde(default)]
    #[schema(nullable)]
    pub roles: Vec<RoleInput>,
    /// Defaults to `type`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable, pattern = "^([A-Za-z0-9._-]{1,64})?$")]
    pub subtype: Option<String>,
}

/// A stored role: the input plus its id and resource name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredRole {
    pub id: String,
    #[serde(flatten)]
    pub input: RoleInput,
}

/// A stored resource, secrets included: never sent as it is.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Resource {
    pub id: String,
    pub org_id: String,
    pub name: String,
    pub kind: String,
    pub subtype: String,
    pub agent_id: String,
    pub env_vars: BTreeMap<String, String>,
    pub roles: Vec<StoredRole>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// A role as responses show it: `secret` is always `{}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RoleView {
    pub agent_id: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub access_max_duration: Option<i64>,
    pub attributes: Vec<String>,
    pub command: Vec<String>,
    #[schema(value_type = Object)]
    pub connection_tags: BTreeMap<String, String>,
    pub default_database: Option<String>,
    pub force_approve_groups: Vec<String>,
    pub guardrail_rules: Vec<String>,
    pub id: String,
    pub jira_issue_template_id: Option<String>,
    pub jit_access_duration_sec: Option<i64>,
    pub managed_by: String,
    pub mandatory_metadata_fields: Vec<String>,
    pub min_review_approvals: Option<i64>,
    pub redact_enabled: bool,
    pub redact_types: Vec<String>,
    pub resource_name: String,
    pub reviewers: Vec<String>,
    /// Write-only: always empty here.
    #[schema(value_type = Object)]
    pub secret: BTreeMap<String, String>,
    pub subtype: String,
    pub tags: Vec<String>,
}

/// The seed's response shape.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ResourceView {
    pub agent_id: String,
    pub created_at: Timestamp,
    #[schema(value_type = Object)]
    pub env_vars: BTreeMap<String, String>,
    pub id: String,
    pub name: String,
    pub roles: Vec<RoleView>,
    pub subtype: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub updated_at: Timestamp,
}

impl ResourceInput {
    pub fn validate(&self) -> Result<(), Invalid> {
        validate_name("name", &self.name, 128)?;
        validate_name("type", &self.kind, 64)?;
        if let Some(subtype) = &self.subtype {
            validate_name("subtype", subtype, 64)?;
        }
        if let Some(agent) = &self.agent_id {
            validate_uuid("agent_id", agent)?;
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, role) in self.roles.iter().enumerate() {
            validate_name(&format!("roles[{i}].name"), &role.name, 128)?;
            validate_name(&format!("roles[{i}].type"), &role.kind, 64)?;
            if let Some(subtype) = &role.subtype {
                validate_name(&format!("roles[{i}].subtype"), subtype, 64)?;
            }
            if let Some(agent) = &role.agent_id {
                validate_uuid(&format!("roles[{i}].agent_id"), agent)?;
            }
            if !names.insert(role.name.as_str()) {
                return Err(Invalid(format!("roles[{i}].name: '{}' appears twice", role.name)));
            }
        }
        Ok(())
    }

    /// The stored form; role ids survive an update of a role with the same name.
    pub fn into_resource(self, org: &str, previous: Option<&Resource>) -> Resource {
        let now = Timestamp::now();
        let agent_id = self.agent_id.unwrap_or_default();
        let roles = self
            .roles
            .into_iter()
            .map(|input| {
                let id = previous
                    .and_then(|p| p.roles.iter().find(|r| r.input.name == input.name))
                    .map_or_else(|| uuid::Uuid::new_v4().to_string(), |r| r.id.clone());
                StoredRole { id, input }
            })
            .collect();
        Resource {
            id: previous.map_or_else(crate::model::new_id, |p| p.id.clone()),
            org_id: org.to_string(),
            subtype: self.subtype.unwrap_or_else(|| self.kind.clone()),
            name: self.name,
            kind: self.kind,
            agent_id,
            env_vars: self.env_vars,
            roles,
            created_at: previous.map_or(now, |p| p.created_at),
            updated_at: now,
        }
    }
}

fn validate_uuid(field: &str, value: &str) -> Result<(), Invalid> {
    match uuid::Uuid::parse_str(value) {
        Ok(_) if value.len() == 36 => Ok(()),
        _ => Err(Invalid(format!("{field}: must be a UUID"))),
    }
}

/// The tag hoop.dev gives a connection to the instance it reaches.
pub const DB_ARN_TAG: &str = "hoop.dev/aws-connect.dbarn";

impl Resource {
    /// create-connections made it for the instance `arn`: every connection dbroles-managed and tagged with it.
    pub fn made_by_dbroles_for(&self, arn: &str) -> bool {
        !self.roles.is_empty()
            && self.roles.iter().all(|role| {
                role.input.managed_by == "dbroles" && role.input.connection_tags.get(DB_ARN_TAG).map(String::as_str) == Some(arn)
            })
    }

    /// What responses show: everything but the secrets.
    pub fn view(&self) -> ResourceView {
        let roles = self
            .roles
            .iter()
            .map(|role| {
                let r = &role.input;
                RoleView {
                    agent_id: r.agent_id.clone().unwrap_or_else(|| self.agent_id.clone()),
                    name: r.name.clone(),
                    kind: r.kind.clone(),
                    access_max_duration: r.access_max_duration,
                    attributes: r.attributes.clone(),
                    command: r.command.clone(),
                    connection_tags: r.connection_tags.clone(),
                    default_database: r.default_database.clone(),
                    force_approve_groups: r.force_approve_groups.clone(),
                    guardrail_rules: r.guardrail_rules.clone(),
                    id: role.id.clone(),
                    jira_issue_template_id: r.jira_issue_template_id.clone(),
                    jit_access_duration_sec: r.jit_access_duration_sec,
                    managed_by: r.managed_by.clone(),
                    mandatory_metadata_fields: r.mandatory_metadata_fields.clone(),
                    min_review_approvals: r.min_review_approvals,
                    redact_enabled: r.redact_enabled,
                    redact_types: r.redact_types.clone(),
                    resource_name: self.name.clone(),
                    reviewers: r.reviewers.clone(),
                    secret: BTreeMap::new(),
                    subtype: r.subtype.clone().unwrap_or_else(|| r.kind.clone()),
                    tags: r.tags.clone(),
                }
            })
            .collect();
        ResourceView {
            agent_id: self.agent_id.clone(),
            created_at: self.created_at,
            env_vars: self.env_vars.clone(),
            id: self.id.clone(),
            name: self.name.clone(),
            roles,
            subtype: self.subtype.clone(),
            kind: self.kind.clone(),
            updated_at: self.updated_at,
        }
    }
}
