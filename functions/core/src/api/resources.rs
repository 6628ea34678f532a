//! The resource routes (seed 003). Role secrets go in and never come out.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::Json;
use http::StatusCode;

use super::extract::{Admin, Body};
use super::{limit, ApiError, Message, Shared};
use crate::auth::Caller;
use crate::request::parse_json;
use crate::resource::{ResourceInput, ResourceView};
use crate::store::{Page, StoreError};

type Answer<T> = Result<T, ApiError>;

fn parse(body: &[u8]) -> Result<ResourceInput, ApiError> {
    let input: ResourceInput = parse_json(body)?;
    input.validate()?;
    Ok(input)
}

/// Registers a resource and its roles.
#[utoipa::path(
    post, path = "/resources", tag = "resources",
    request_body = ResourceInput,
    responses(
        (status = 201, description = "The resource, secrets left out", body = ResourceView),
        (status = 400, description = "A field is invalid", body = Message),
        (status = 403, description = "The caller is not an admin", body = Message),
        (status = 409, description = "The name is taken", body = Message),
    ),
    security(("bearer" = []))
)]
pub(super) async fn create(
    State(app): State<Shared>,
    Admin(caller): Admin,
    Body(body): Body,
) -> Answer<(StatusCode, Json<ResourceView>)> {
    let resource = parse(&body)?.into_resource(&caller.org, None);
    app.resources.create_resource(&resource).await?;
    Ok((StatusCode::CREATED, Json(resource.view())))
}

/// The organisation's resources, by name.
#[utoipa::path(
    get, path = "/resources", tag = "resources",
    params(
        ("limit" = Option<usize>, Query, minimum = 1, maximum = 100, description = "1 to 100, default 50"),
        ("next_token" = Option<String>, Query, description = "The previous page's next_token"),
    ),
    responses(
        (status = 200, description = "A page of resources", body = Page<ResourceView>),
        (status = 400, description = "limit or next_token is invalid", body = Message),
    ),
    security(("bearer" = []))
)]
pub(super) async fn list(
    State(app): State<Shared>,
    caller: Caller,
    Query(params): Query<HashMap<String, String>>,
) -> Answer<Json<Page<ResourceView>>> {
    let next_token = params.get("next_token").map(String::as_str);
    let page = app.resources.list_resources(&caller.org, limit(&params, 50)?, next_token).await?;
    let items: Vec<ResourceView> = page.items.iter().map(|r| r.view()).collect();
    Ok(Json(Page { items, next_token: page.next_token }))
}

/// One resource.
#[utoipa::path(
    get, path = "/resources/{name}", tag = "resources",
    params(("name" = String, Path, description = "The resource name")),
    responses(
        (status = 200, description = "The resource, secrets left out", body = ResourceView),
        (status = 404, description = "No such resource", body = Message),
    ),
    security(("bearer" = []))
)]
pub(super) async fn get(State(app): State<Shared>, caller: Caller, Path(name): Path<String>) -> Answer<Json<ResourceView>> {
    let resource = app
        .resources
        .get_resource(&caller.org, &name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no resource {name}")))?;
    Ok(Json(resource.view()))
}

/// Creates or replaces a resource; its roles keep their ids.
#[utoipa::path(
    put, path = "/resources/{name}", tag = "resources",
    params(("name" = String, Path, description = "The resource name")),
    request_body = ResourceInput,
    responses(
        (status = 200, description = "The resource, secrets left out", body = ResourceView),
        (status = 400, description = "A field is invalid, or the body names another resource", body = Message),
        (status = 403, description = "The caller is not an admin", body = Message),
    ),
    security(("bearer" = []))
)]
pub(super) async fn put(
    State(app): State<Shared>,
    Admin(caller): Admin,
    Path(name): Path<String>,
    Body(body): Body,
) -> Answer<Json<ResourceView>> {
    let input = parse(&body)?;
    if input.name != name {
        return Err(ApiError::bad_request(format!("name: '{}' does not match the path's '{name}'", input.name)));
    }
    let previous = app.resources.get_resource(&caller.org, &name).await?;
    let resource = input.into_resource(&caller.org, previous.as_ref());
    app.resources.put_resource(&resource).await?;
    Ok(Json(resource.view()))
}

/// Deletes a resource.
#[utoipa::path(
    delete, path = "/resources/{name}", tag = "resources",
    params(("name" = String, Path, description = "The resource name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "The caller is not an admin", body = Message),
        (status = 404, description = "No such resource", body = Message),
    ),
    security(("bearer" = []))
)]
pub(super) async fn delete(State(app): State<Shared>, Admin(caller): Admin, Path(name): Path<String>) -> Answer<StatusCode> {
    app.resources.delete_resource(&caller.org, &name).await.map_err(|error| match error {
        StoreError::NotFound => ApiError::not_found(format!("no resource {name}")),
        other => other.into(),
    })?;
    Ok(StatusCode::NO_CONTENT)
}
