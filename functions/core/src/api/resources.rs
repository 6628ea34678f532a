//! The resource routes (seed 003), as hoop.dev's clients use them. Role secrets
//! go in and never come out.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::Json;
use http::{HeaderMap, StatusCode};
use serde::Serialize;
use utoipa::ToSchema;

use super::extract::{Admin, Body, Reader};
use super::{ignored_fields, limit, ApiError, Message, Shared};
use crate::model::request::{parse_lenient, Lenient};
use crate::model::resource::{ResourceInput, ResourceView};
use crate::store::{Page, StoreError};

type Answer<T> = Result<T, ApiError>;

/// The most resources a listing without `limit` or `page_size` returns.
pub const MAX_RESOURCES: usize = 1000;

fn parse(body: &[u8]) -> Result<Lenient<ResourceInput>, ApiError> {
    let input: Lenient<ResourceInput> = parse_lenient(body)?;
    input.value.validate()?;
    Ok(input)
}

/// Registers a resource and its roles.
#[utoipa::path(
    post, path = "/resources", tag = "resources",
    request_body = ResourceInput,
    responses(
        (status = 201, description = "The resource, secrets left out; unknown fields are named in X-Dbroles-Ignored-Fields", body = ResourceView),
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
) -> Answer<(StatusCode, HeaderMap, Json<ResourceView>)> {
    let input = parse(&body)?;
    let resource = input.value.into_resource(&caller.org, None);
    app.deps.resources.create_resource(&resource).await?;
    Ok((StatusCode::CREATED, ignored_fields(&input.ignored), Json(resource.view())))
}

/// `page` and `page_size` of hoop.dev's listings.
#[derive(Debug, Serialize, ToSchema)]
pub struct Pagination {
    pub total: usize,
    pub page: usize,
    pub size: usize,
}

/// A page of resources as hoop.dev pages them (`page`, `page_size`).
#[derive(Debug, Serialize, ToSchema)]
pub struct PagedResources {
    pub pages: Pagination,
    pub data: Vec<ResourceView>,
}

/// `GET /resources`: every resource (hoop.dev's bare array), hoop.dev's pages,
/// or dbroles' token pages.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum ResourceList {
    All(Vec<ResourceView>),
    Paged(PagedResources),
    Tokens(Page<ResourceView>),
}

/// The organisation's resources, by name: all of them (up to 1,000) as an array;
/// with `page`/`page_size`, hoop.dev's pages (`limit` and `next_token` are then
/// not used); with `limit`/`next_token`, dbroles' pages.
#[utoipa::path(
    get, path = "/resources", tag = "resources",
    params(
        ("search" = Option<String>, Query, description = "Only resources whose name, type or subtype contains this"),
        ("name" = Option<String>, Query, description = "Only the resource of this name"),
        ("subtype" = Option<String>, Query, description = "Only resources of this subtype"),
        ("page" = Option<usize>, Query, minimum = 1, maximum = 1000000000, description = "hoop.dev's page number, from 1"),
        ("page_size" = Option<usize>, Query, minimum = 1, maximum = 100, description = "hoop.dev's page size, 1 to 100, default 50"),
        ("limit" = Option<usize>, Query, minimum = 1, maximum = 100, description = "1 to 100, default 50"),
        ("next_token" = Option<String>, Query, description = "The previous page's next_token"),
    ),
    responses(
        (status = 200, description = "The resources: an array, hoop.dev's {pages, data}, or {items, next_token}", body = ResourceList),
        (status = 400, description = "A paging parameter is invalid", body = Message),
        (status = 403, description = "The caller is in no reader group", body = Message),
    ),
    security(("bearer" = []))
)]
pub(super) async fn list(
    State(app): State<Shared>,
    Reader(caller): Reader,
    Query(params): Query<HashMap<String, String>>,
) -> Answer<Json<ResourceList>> {
    let search = params.get("search").map(|needle| needle.to_lowercase());
    let matches = |view: &ResourceView| {
        search
            .as_ref()
            .is_none_or(|needle| [&view.name, &view.kind, &view.subtype].iter().any(|f| f.to_lowercase().contains(needle)))
            && params.get("name").is_none_or(|name| *name == view.name)
            && params.get("subtype").is_none_or(|subtype| *subtype == view.subtype)
    };
    let number = |name: &str, default: usize, max: usize, expected: &str| match params.get(name) {
        None => Ok(default),
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| ApiError::bad_request(format!("{name}: expected {expected}"))),
    };
    let page = number("page", 1, 1_000_000_000, "1 to 1000000000")?;
    let size = number("page_size", 50, 100, "1 to 100")?;
    let limit = limit(&params, 50)?;
    let hoop_pages = params.contains_key("page") || params.contains_key("page_size");
    // An empty next_token is none, as Go clients send an unset string.
    let next_token = params.get("next_token").map(String::as_str).filter(|token| !token.is_empty());
    if !hoop_pages && (params.contains_key("limit") || next_token.is_some()) {
        let page = app.deps.resources.list_resources(&caller.org, limit, next_token).await?;
        let items = page.items.iter().map(|r| r.view()).filter(|view| matches(view)).collect();
        return Ok(Json(ResourceList::Tokens(Page { items, next_token: page.next_token })));
    }
    let mut all = Vec::new();
    let mut token = None;
    while all.len() < MAX_RESOURCES {
        let page = app.deps.resources.list_resources(&caller.org, 100, token.as_deref()).await?;
        all.extend(page.items.iter().map(|r| r.view()).filter(|view| matches(view)));
        match page.next_token {
            Some(next) => token = Some(next),
            None => break,
        }
    }
    all.truncate(MAX_RESOURCES);
    if !hoop_pages {
        return Ok(Json(ResourceList::All(all)));
    }
    let total = all.len();
    let data = all.into_iter().skip((page - 1).saturating_mul(size)).take(size).collect();
    Ok(Json(ResourceList::Paged(PagedResources { pages: Pagination { total, page, size }, data })))
}

/// One resource.
#[utoipa::path(
    get, path = "/resources/{name}", tag = "resources",
    params(("name" = String, Path, description = "The resource name")),
    responses(
        (status = 200, description = "The resource, secrets left out", body = ResourceView),
        (status = 403, description = "The caller is in no reader group", body = Message),
        (status = 404, description = "No such resource", body = Message),
    ),
    security(("bearer" = []))
)]
pub(super) async fn get(
    State(app): State<Shared>,
    Reader(caller): Reader,
    Path(name): Path<String>,
) -> Answer<Json<ResourceView>> {
    let resource = app
        .deps
        .resources
        .get_resource(&caller.org, &name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no resource {name}")))?;
    Ok(Json(resource.view()))
}

/// Updates a resource as hoop.dev does: its name (another name in the body
/// renames it), type, subtype, agent and variables; its connections (`roles`) are
/// never touched, and its type cannot change while it has any.
#[utoipa::path(
    put, path = "/resources/{name}", tag = "resources",
    params(("name" = String, Path, description = "The resource name")),
    request_body = ResourceInput,
    responses(
        (status = 200, description = "The resource, secrets left out; unknown fields are named in X-Dbroles-Ignored-Fields", body = ResourceView),
        (status = 400, description = "A field is invalid", body = Message),
        (status = 403, description = "The caller is not an admin, or the type would change while the resource has connections", body = Message),
        (status = 404, description = "No such resource", body = Message),
        (status = 409, description = "The body renames the resource to a name that is taken", body = Message),
    ),
    security(("bearer" = []))
)]
pub(super) async fn put(
    State(app): State<Shared>,
    Admin(caller): Admin,
    Path(name): Path<String>,
    Body(body): Body,
) -> Answer<(HeaderMap, Json<ResourceView>)> {
    let previous = app
        .deps
        .resources
        .get_resource(&caller.org, &name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no resource {name}")))?;
    let input = parse(&body)?;
    let mut resource = ResourceInput { roles: Vec::new(), ..input.value }.into_resource(&caller.org, Some(&previous));
    if !previous.roles.is_empty() && (&resource.kind, &resource.subtype) != (&previous.kind, &previous.subtype) {
        let message = "type, subtype: cannot change while the resource has connections";
        return Err(ApiError::new(StatusCode::FORBIDDEN, message));
    }
    resource.roles = previous.roles;
    if resource.name == name {
        app.deps.resources.put_resource(&resource).await?;
    } else {
        // Another name in the body renames the resource, as hoop.dev does; a taken name is a conflict.
        app.deps.resources.create_resource(&resource).await?;
        app.deps.resources.delete_resource(&caller.org, &name).await?;
    }
    Ok((ignored_fields(&input.ignored), Json(resource.view())))
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
    app.deps.resources.delete_resource(&caller.org, &name).await.map_err(|error| match error {
        StoreError::NotFound => ApiError::not_found(format!("no resource {name}")),
        other => other.into(),
    })?;
    Ok(StatusCode::NO_CONTENT)
}
