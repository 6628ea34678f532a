//! `GET /openapi.json`: what every document shares (title, tags, the bearer
//! scheme); the paths come from the routes themselves ([`super::routes`]), so the
//! document cannot drift from the code.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(title = "dbroles", description = "Least-privilege database roles on AWS RDS and Aurora."),
    modifiers(&Bearer),
    tags(
        (name = "jobs", description = "DB role jobs: the roles `<prefix>_ro`, `<prefix>_rw` and `<prefix>_ddl` in every database of an instance"),
        (name = "resources", description = "Resources (databases) and their connections, one per role"),
    )
)]
struct Document;

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let scheme = HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build();
        components.add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// The document before the routes add their paths.
pub(super) fn base() -> utoipa::openapi::OpenApi {
    Document::openapi()
}
