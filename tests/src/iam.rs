//! IAM checked by tests: a proxy that records the action of every AWS request
//! passing through, and the actions `template.yaml` grants each function.

use std::sync::{Arc, Mutex};

use crate::path_of;

use crate::faults::Faults;
use crate::web::forward_to;

/// A proxy in front of moto that records the IAM action of every AWS request
/// passing through (`dynamodb:GetItem`, `rds:DescribeDBInstances`, ...), so a test
/// can check that the template grants each function what it does.
#[derive(Clone)]
pub struct ActionRecorder {
    /// Where the SDK should send its requests.
    pub endpoint: String,
    /// Faults injected into the requests passing through.
    pub faults: Faults,
    actions: Arc<Mutex<Vec<String>>>,
}

impl ActionRecorder {
    pub async fn start(upstream: &str) -> Self {
        let (actions, faults) = (Arc::new(Mutex::new(Vec::new())), Faults::default());
        let (http, upstream, recorded, injected) =
            (reqwest::Client::new(), upstream.to_string(), actions.clone(), faults.clone());
        let router = axum::Router::new().fallback(move |request: axum::extract::Request| {
            let (http, upstream, recorded, injected) = (http.clone(), upstream.clone(), recorded.clone(), injected.clone());
            async move {
                let (parts, body) = request.into_parts();
                let body = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
                recorded.lock().unwrap().extend(iam_actions(&parts, &body));
                if let Some(answer) = injected.answer(&parts, &body) {
                    return answer;
                }
                forward_to(&http, &upstream, axum::extract::Request::from_parts(parts, axum::body::Body::from(body))).await
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a free port");
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self { endpoint, faults, actions }
    }

    /// The distinct actions recorded since the last call.
    pub fn take(&self) -> std::collections::BTreeSet<String> {
        std::mem::take(&mut *self.actions.lock().unwrap()).into_iter().collect()
    }
}

/// The IAM actions an AWS request needs: the service from its SigV4 credential
/// scope, the operation from `X-Amz-Target` (JSON protocols), `Action=` (query
/// protocols) or the path (Lambda's REST API). A DynamoDB transaction needs the
/// actions of its items (IAM has no `TransactWriteItems`).
fn iam_actions(parts: &http::request::Parts, body: &[u8]) -> Vec<String> {
    let Some(action) = iam_action(parts, body) else { return Vec::new() };
    if action != "dynamodb:TransactWriteItems" {
        return vec![action];
    }
    let request: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let items = request["TransactItems"].as_array().cloned().unwrap_or_default();
    items
        .iter()
        .filter_map(|item| item.as_object()?.keys().next().cloned())
        .map(|kind| match kind.as_str() {
            "ConditionCheck" => "dynamodb:ConditionCheckItem".to_string(),
            other => format!("dynamodb:{other}Item"),
        })
        .collect()
}

fn iam_action(parts: &http::request::Parts, body: &[u8]) -> Option<String> {
    let authorization = parts.headers.get("authorization")?.to_str().ok()?;
    let scope = authorization.split("Credential=").nth(1)?.split(',').next()?;
    let service = scope.split('/').nth(3)?;
    let target = parts.headers.get("x-amz-target").and_then(|t| t.to_str().ok());
    let form = std::str::from_utf8(body)
        .ok()
        .and_then(|text| text.split('&').find_map(|pair| pair.strip_prefix("Action=")).map(str::to_string));
    let operation = match (target, form) {
        (Some(target), _) => target.rsplit('.').next()?.to_string(),
        (None, Some(action)) => action,
        _ if parts.uri.path().ends_with("/invocations") => "InvokeFunction".to_string(),
        _ => parts.uri.path().rsplit('/').next()?.to_string(),
    };
    Some(format!("{service}:{operation}"))
}

/// The IAM actions `template.yaml` grants the function with this logical id, in
/// any of its policy statements (both branches of an `!If` included).
pub fn template_actions(function: &str) -> std::collections::BTreeSet<String> {
    let text = std::fs::read_to_string(path_of("template.yaml")).expect("template.yaml is readable");
    let template: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).expect("template.yaml parses");
    let policies = &template["Resources"][function]["Properties"]["Policies"];
    assert!(!policies.is_null(), "template.yaml has no function {function} with policies");
    let mut actions = std::collections::BTreeSet::new();
    collect_actions(policies, &mut actions);
    actions
}

fn collect_actions(value: &serde_yaml_ng::Value, into: &mut std::collections::BTreeSet<String>) {
    use serde_yaml_ng::Value;
    match value {
        Value::Mapping(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    (Some("Action"), Value::String(action)) => {
                        into.insert(action.clone());
                    }
                    (Some("Action"), Value::Sequence(list)) => {
                        into.extend(list.iter().filter_map(|a| a.as_str().map(String::from)))
                    }
                    _ => collect_actions(value, into),
                }
            }
        }
        Value::Sequence(list) => list.iter().for_each(|item| collect_actions(item, into)),
        Value::Tagged(tagged) => collect_actions(&tagged.value, into),
        _ => {}
    }
}

/// The AWS services `template.yaml` makes VPC endpoints for (`dynamodb`, `kms`, ...).
pub fn template_endpoint_services() -> std::collections::BTreeSet<String> {
    let text = std::fs::read_to_string(path_of("template.yaml")).expect("template.yaml is readable");
    let template: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).expect("template.yaml parses");
    let resources = template["Resources"].as_mapping().expect("template.yaml has resources");
    resources
        .values()
        .filter(|resource| resource["Type"].as_str() == Some("AWS::EC2::VPCEndpoint"))
        .filter_map(|resource| match &resource["Properties"]["ServiceName"] {
            serde_yaml_ng::Value::Tagged(tagged) => tagged.value.as_str().map(str::to_string),
            other => other.as_str().map(str::to_string),
        })
        .filter_map(|name| name.rsplit('.').next().map(str::to_string))
        .collect()
}
