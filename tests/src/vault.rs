//! A Vault of the tests' own: KV v2 over HTTP as Vault's documentation describes
//! it (no Vault server can be installed on these machines), recording every request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

/// What the fake Vault saw and holds.
#[derive(Default)]
pub struct Vault {
    pub requests: Vec<(String, String, Option<String>, Value)>,
    pub data: HashMap<String, Vec<Value>>,
    pub metadata: HashMap<String, Value>,
}

pub type Shared = Arc<Mutex<Vault>>;

pub const VAULT_TOKEN: &str = "s.test-token";

fn authorised(headers: &HeaderMap) -> bool {
    headers.get("x-vault-token").and_then(|v| v.to_str().ok()) == Some(VAULT_TOKEN)
}

/// `POST /v1/:mount/data/*path` (with `options.cas`) and `GET` of the same (with `?version=`),
/// `POST` and `DELETE /v1/:mount/metadata/*path`, as Vault's KV v2 documentation describes them.
pub async fn vault_server() -> (String, Shared) {
    let shared: Shared = Arc::default();
    async fn write(
        State(vault): State<Shared>,
        headers: HeaderMap,
        Path((mount, kind, path)): Path<(String, String, String)>,
        Json(body): Json<Value>,
    ) -> (StatusCode, Json<Value>) {
        let namespace = headers.get("x-vault-namespace").and_then(|v| v.to_str().ok()).map(str::to_string);
        let mut vault = vault.lock().unwrap();
        vault.requests.push(("POST".into(), format!("{mount}/{kind}/{path}"), namespace, body.clone()));
        if !authorised(&headers) {
            return (StatusCode::FORBIDDEN, Json(json!({"errors": ["permission denied"]})));
        }
        if mount != "dbsecrets" {
            return (StatusCode::NOT_FOUND, Json(json!({"errors": []})));
        }
        match kind.as_str() {
            "data" => {
                let versions = vault.data.entry(path).or_default();
                if let Some(cas) = body["options"]["cas"].as_u64() {
                    if cas != versions.len() as u64 {
                        let error = "check-and-set parameter did not match the current version";
                        return (StatusCode::BAD_REQUEST, Json(json!({"errors": [error]})));
                    }
                }
                versions.push(body["data"].clone());
                (StatusCode::OK, Json(json!({"data": {"version": versions.len()}})))
            }
            "metadata" => {
                vault.metadata.insert(path, body);
                (StatusCode::NO_CONTENT, Json(json!({})))
            }
            _ => (StatusCode::NOT_FOUND, Json(json!({"errors": []}))),
        }
    }
    let app = Router::new().route("/v1/{mount}/{kind}/{*path}", post(write).get(read).delete(delete)).with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (address, shared)
}

/// The latest version, or `?version=n` (1 is the first).
async fn read(
    State(vault): State<Shared>,
    headers: HeaderMap,
    Path((mount, kind, path)): Path<(String, String, String)>,
    Query(query): Query<HashMap<String, usize>>,
) -> (StatusCode, Json<Value>) {
    let vault = vault.lock().unwrap();
    if !authorised(&headers) {
        return (StatusCode::FORBIDDEN, Json(json!({"errors": ["permission denied"]})));
    }
    let versions = vault.data.get(&path);
    let version = query.get("version").copied().or(versions.map(Vec::len)).unwrap_or(0);
    match versions.and_then(|versions| versions.get(version.wrapping_sub(1))) {
        Some(data) if mount == "dbsecrets" && kind == "data" => {
            (StatusCode::OK, Json(json!({"data": {"data": data, "metadata": {"version": version}}})))
        }
        _ => (StatusCode::NOT_FOUND, Json(json!({"errors": []}))),
    }
}

/// `DELETE /v1/:mount/metadata/*path`: every version and the metadata.
async fn delete(
    State(vault): State<Shared>,
    headers: HeaderMap,
    Path((mount, kind, path)): Path<(String, String, String)>,
) -> StatusCode {
    let mut vault = vault.lock().unwrap();
    vault.requests.push(("DELETE".into(), format!("{mount}/{kind}/{path}"), None, Value::Null));
    if !authorised(&headers) {
        return StatusCode::FORBIDDEN;
    }
    if mount != "dbsecrets" || kind != "metadata" {
        return StatusCode::NOT_FOUND;
    }
    vault.data.remove(&path);
    vault.metadata.remove(&path);
    StatusCode::NO_CONTENT
}
