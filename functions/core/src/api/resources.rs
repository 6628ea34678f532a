//! The resource routes (seed 003). Role secrets go in and never come out.

use std::collections::HashMap;

use http::StatusCode;

use super::{json, limit, no_content, ApiError, ApiResult, App, Message};
use crate::auth::Caller;
use crate::request::parse_json;
use crate::resource::{ResourceInput, ResourceView};
use crate::store::Page;

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
        (status = 409, description = "The name is taken", body = Message),
    ),
    security(("bearer" = []))
)]
pub(super) async fn create(app: &App, caller: &Caller, body: &[u8]) -> ApiResult {
    let resource = parse(body)?.into_resource(&caller.org, None);
    app.resources.create_resource(&resource).await?;
    json(StatusCode::CREATED, &resource.view())
}

/// The organisation's resources, by name.
#[utoipa::path(
    get, path = "/resources", tag = "resources",
    params(
        ("limit" = Option<usize>, Query, description = "1 to 100, default 50"),
        ("next_token" = Option<String>, Query, description = "The previous page's next_token"),
    ),
    responses((status = 200, description = "A page of resources", body = Page<ResourceView>)),
    security(("bearer" = []))
)]
pub(super) async fn list(app: &App, caller: &Caller, params: &HashMap<String, String>) -> ApiResult {
    let page =
        app.resources.list_resources(&caller.org, limit(params, 50)?, params.get("next_token").map(String::as_str)).await?;
    let items: Vec<ResourceView> = page.items.iter().map(|r| r.view()).collect();
    json(StatusCode::OK, &Page { items, next_token: page.next_token })
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
pub(super) async fn get(app: &App, caller: &Caller, name: &str) -> ApiResult {
    let resource =
        app.resources.get_resource(&caller.org, name).await?.ok_or_else(|| ApiError::not_found(format!("no resource {name}")))?;
    json(StatusCode::OK, &resource.view())
}

/// Creates or replaces a resource; its roles keep their ids.
#[utoipa::path(
    put, path = "/resources/{name}", tag = "resources",
    params(("name" = String, Path, description = "The resource name")),
    request_body = ResourceInput,
    responses(
        (status = 200, description = "The resource, secrets left out", body = ResourceView),
        (status = 400, description = "A field is invalid, or the body names another resource", body = Message),
    ),
    security(("bearer" = []))
)]
pub(super) async fn put(app: &App, caller: &Caller, name: &str, body: &[u8]) -> ApiResult {
    let input = parse(body)?;
    if input.name != name {
        return Err(ApiError::bad_request(format!("name: '{}' does not match the path's '{name}'", input.name)));
    }
    let previous = app.resources.get_resource(&caller.org, name).await?;
    let resource = input.into_resource(&caller.org, previous.as_ref());
    app.resources.put_resource(&resource).await?;
    json(StatusCode::OK, &resource.view())
}

/// Deletes a resource.
#[utoipa::path(
    delete, path = "/resources/{name}", tag = "resources",
    params(("name" = String, Path, description = "The resource name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such resource", body = Message),
    ),
    security(("bearer" = []))
)]
pub(super) async fn delete(app: &App, caller: &Caller, name: &str) -> ApiResult {
    app.resources.delete_resource(&caller.org, name).await.map_err(|error| match error {
        crate::store::StoreError::NotFound => ApiError::not_found(format!("no resource {name}")),
        other => other.into(),
    })?;
    no_content()
}
