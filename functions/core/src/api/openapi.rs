//! `GET /openapi.json`: generated from the handlers' annotations and the types
//! they exchange, so it cannot drift from the code.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{jobs, resources};

#[derive(OpenApi)]
#[openapi(
    info(title = "dbroles", description = "Least-privilege database roles on AWS RDS and Aurora."),
    paths(
        jobs::create, jobs::list, jobs::stats, jobs::get, jobs::cancel, jobs::delete,
        resources::create, resources::list, resources::get, resources::put, resources::delete,
    ),
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

/// The OpenAPI 3 document of every route.
pub fn document() -> utoipa::openapi::OpenApi {
    Document::openapi()
}
