//! `scope` (added by dbroles): which levels, databases and schemas a job covers.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::engine::{self, Invalid, Level};

/// Names to cover: those an `include` pattern matches (every name, with none),
/// less those an `exclude` pattern matches; `*` matches any run of characters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Patterns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(inline, value_type = Vec<Glob>, max_items = 50, example = json!(["app*"]))]
    pub include: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(inline, value_type = Vec<Glob>, max_items = 50, example = json!(["*_archive"]))]
    pub exclude: Vec<String>,
}

/// A pattern, as the OpenAPI document describes it: 1 to 128 characters, no control character.
#[derive(ToSchema)]
#[schema(pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]{1,128}$", example = "app*")]
#[allow(dead_code)]
struct Glob(String);

/// A level, as the OpenAPI document describes it.
#[derive(ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
enum LevelName {
    Ro,
    Rw,
    Ddl,
}

impl Patterns {
    pub fn is_everything(&self) -> bool {
        self.include.is_empty() && self.exclude.is_empty()
    }

    fn globs(&self) -> engine::Globs {
        engine::Globs { include: self.include.clone(), exclude: self.exclude.clone() }
    }

    fn validate(&self, field: &str) -> Result<(), Invalid> {
        for (list, patterns) in [("include", &self.include), ("exclude", &self.exclude)] {
            if patterns.len() > MAX_PATTERNS {
                return Err(Invalid(format!("{field}.{list}: at most {MAX_PATTERNS} patterns")));
            }
            let bad = patterns.iter().find(|p| p.is_empty() || p.chars().count() > 128 || p.chars().any(char::is_control));
            if let Some(pattern) = bad {
                return Err(Invalid(format!(
                    "{field}.{list}: '{}' must be 1 to 128 printable characters",
                    pattern.escape_debug()
                )));
            }
        }
        Ok(())
    }
}

/// The most patterns in one list.
const MAX_PATTERNS: usize = 50;

/// What a run covers. It grants its levels in the databases and schemas of the
/// scope, and withdraws what the roles hold outside it (a database or schema a
/// narrower scope leaves out). The default is everything.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Scope {
    #[serde(default, skip_serializing_if = "Patterns::is_everything")]
    pub databases: Patterns,
    /// PostgreSQL's schemas (MySQL and MariaDB have none within a database).
    #[serde(default, skip_serializing_if = "Patterns::is_everything")]
    pub schemas: Patterns,
    /// A subset of `ro`, `rw` and `ddl` (a level named twice counts once); none: all three. A run provisions only
    /// these; a revoke retires only these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(inline, value_type = Vec<LevelName>, example = json!(["ro"]))]
    pub levels: Vec<Level>,
}

/// A scope of everything, for runs that name none.
pub static EVERYTHING: Scope = Scope {
    databases: Patterns { include: Vec::new(), exclude: Vec::new() },
    schemas: Patterns { include: Vec::new(), exclude: Vec::new() },
    levels: Vec::new(),
};

impl Scope {
    pub fn is_everything(&self) -> bool {
        self == &EVERYTHING
    }

    /// The levels in scope, in their order.
    pub fn levels(&self) -> Vec<Level> {
        Level::ALL.into_iter().filter(|level| self.levels.is_empty() || self.levels.contains(level)).collect()
    }

    /// The databases and schemas, as the engine covers them.
    pub fn engine(&self) -> engine::Scope {
        engine::Scope { databases: self.databases.globs(), schemas: self.schemas.globs() }
    }

    pub fn validate(&self) -> Result<(), Invalid> {
        self.databases.validate("scope.databases")?;
        self.schemas.validate("scope.schemas")
    }
}
