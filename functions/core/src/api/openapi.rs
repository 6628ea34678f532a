//! `GET /openapi.json`: what every document shares (title, tags, the bearer
//! scheme, the 401 of every route behind it); the paths come from the routes
//! themselves ([`super::routes`]), so the document cannot drift from the code.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(title = "dbroles", description = "Least-privilege database roles on AWS RDS and Aurora."),
    modifiers(&Bearer),
    tags(
        (name = "jobs", description = "DB role jobs: the roles `<prefix>_ro`, `<prefix>_rw` and `<prefix>_ddl` in every database of an instance"),
        (name = "resources", description = "Resources (databases) and their connections, one per role"),
        (name = "accounts", description = "The AWS accounts an organisation may act on"),
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

/// Every operation behind the bearer scheme also answers 401, with the one error body.
pub(super) fn document_unauthorized(document: &mut utoipa::openapi::OpenApi) {
    for item in document.paths.paths.values_mut() {
        let operations = [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch];
        for operation in operations.into_iter().flatten() {
            if operation.security.as_ref().is_none_or(|security| security.is_empty()) {
                continue;
            }
            operation.responses.responses.entry("401".to_string()).or_insert_with(|| {
                let body = ContentBuilder::new().schema(Some(Ref::from_schema_name("Message"))).build();
                let description = "No bearer token, or one that is not valid";
                ResponseBuilder::new().description(description).content("application/json", body).build().into()
            });
        }
    }
}
