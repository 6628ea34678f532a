//! The refusals that cancelling and deleting share across the kinds of job
//! (jobs, fleet jobs), documented once: each route adds its success answer.

use std::collections::BTreeMap;
use std::marker::PhantomData;

use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};
use utoipa::IntoResponses;

/// A kind of job an admin may cancel and delete.
pub(super) trait Kind {
    /// How the answers name one: `job`, `fleet job`.
    const NOUN: &'static str;
}

pub(super) struct Jobs;

impl Kind for Jobs {
    const NOUN: &'static str = "job";
}

pub(super) struct FleetJobs;

impl Kind for FleetJobs {
    const NOUN: &'static str = "fleet job";
}

/// Why a cancel is refused: 403, 404, or 409 once the job has finished.
pub(super) struct CancelRefused<K>(PhantomData<K>);

/// Why a delete is refused: 403, 404, or 409 while the job runs.
pub(super) struct DeleteRefused<K>(PhantomData<K>);

impl<K: Kind> IntoResponses for CancelRefused<K> {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        refusals(K::NOUN, format!("The {} has already finished", K::NOUN))
    }
}

impl<K: Kind> IntoResponses for DeleteRefused<K> {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        refusals(K::NOUN, format!("The {} is running", K::NOUN))
    }
}

/// 403 (not an admin), 404 (no such job) and 409 (`conflict`), each a `Message`.
fn refusals(noun: &str, conflict: String) -> BTreeMap<String, RefOr<Response>> {
    let message = |description: String| {
        let content = ContentBuilder::new().schema(Some(Ref::from_schema_name("Message"))).build();
        RefOr::T(ResponseBuilder::new().description(description).content("application/json", content).build())
    };
    BTreeMap::from([
        ("403".to_string(), message("The caller is not an admin".into())),
        ("404".to_string(), message(format!("No such {noun}"))),
        ("409".to_string(), message(conflict)),
    ])
}
