//! HTTP for the tests: forwarding to moto, a webhook receiver, and the API's
//! router called as the API Lambda and the local server call it.

use std::sync::Arc;

use dbroles_core::api::{self, Authenticated};
use dbroles_core::auth::{AuthError, Caller};
use dbroles_core::deps::App;
use tower::ServiceExt;

/// Sends one request through the API's router, as `caller`; the answer with its body as text.
pub async fn call_api(
    app: &App,
    caller: Result<Caller, AuthError>,
    request: http::Request<bytes::Bytes>,
) -> http::Response<String> {
    let (mut parts, body) = request.into_parts();
    parts.extensions.insert(Authenticated(caller));
    let request = http::Request::from_parts(parts, axum::body::Body::from(body));
    let response = api::router(Arc::new(app.clone())).oneshot(request).await.expect("the router answers");
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.expect("the body is read");
    http::Response::from_parts(parts, String::from_utf8_lossy(&bytes).into_owned())
}

/// [`call_api`] with a JSON body and a JSON answer (`Null` for none).
pub async fn call_json(
    app: &App,
    caller: Result<Caller, AuthError>,
    method: &str,
    uri: &str,
    body: Option<serde_json::Value>,
) -> (http::StatusCode, serde_json::Value) {
    let bytes = body.map(|body| bytes::Bytes::from(body.to_string())).unwrap_or_default();
    let request = http::Request::builder().method(method).uri(uri).body(bytes).expect("a request");
    let response = call_api(app, caller, request).await;
    (response.status(), serde_json::from_str(response.body()).unwrap_or(serde_json::Value::Null))
}

/// Sends a request on to `upstream` as it came, and its answer back.
pub(crate) async fn forward_to(
    http: &reqwest::Client,
    upstream: &str,
    request: axum::extract::Request,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
    let path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let mut upstream = http.request(parts.method.clone(), format!("{upstream}{path}")).body(body);
    for (name, value) in &parts.headers {
        if !matches!(name.as_str(), "host" | "connection" | "content-length" | "transfer-encoding" | "keep-alive") {
            upstream = upstream.header(name, value);
        }
    }
    match upstream.send().await {
        Ok(answer) => {
            let status = answer.status();
            let headers = answer.headers().clone();
            let bytes = answer.bytes().await.unwrap_or_default();
            let mut response = (status, bytes).into_response();
            for (name, value) in &headers {
                if !matches!(name.as_str(), "connection" | "content-length" | "transfer-encoding" | "keep-alive") {
                    response.headers_mut().insert(name, value.clone());
                }
            }
            response
        }
        Err(error) => (http::StatusCode::BAD_GATEWAY, error.to_string()).into_response(),
    }
}

/// What the webhook receiver got: headers and body of each POST.
pub type Received = std::sync::Arc<std::sync::Mutex<Vec<(std::collections::HashMap<String, String>, String)>>>;

/// A local webhook endpoint: its URL, and what it received.
pub async fn webhook_receiver() -> (String, Received) {
    let received: Received = Default::default();
    let store = received.clone();
    let router = axum::Router::new().route(
        "/hooks/dbroles",
        axum::routing::post(move |headers: http::HeaderMap, body: String| {
            let store = store.clone();
            async move {
                let headers = headers.iter().map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string())).collect();
                store.lock().unwrap().push((headers, body));
                http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks/dbroles", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    (url, received)
}
