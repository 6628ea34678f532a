//! The Lambda adapter of [`Hook`]: the deployment's hook function, invoked with the job.

use async_trait::async_trait;

use super::{Hook, HookOutcome};
use crate::model::job::Job;

/// A Lambda function as the hook: invoked with `{"job": ...}`; it may answer
/// `{"exit_code": n, "output": "..."}`, anything else is its output.
pub struct LambdaHook {
    pub client: aws_sdk_lambda::Client,
    pub function: String,
}

#[async_trait]
impl Hook for LambdaHook {
    async fn run(&self, job: &Job) -> HookOutcome {
        let payload = serde_json::json!({ "job": job }).to_string();
        let answer = self
            .client
            .invoke()
            .function_name(&self.function)
            .payload(aws_sdk_lambda::primitives::Blob::new(payload))
            .send()
            .await;
        match answer {
            Err(error) => HookOutcome {
                exit_code: 1,
                output: format!("invoking {}: {}", self.function, aws_sdk_lambda::error::DisplayErrorContext(error)),
            },
            Ok(out) => {
                let body = out.payload().map(|p| String::from_utf8_lossy(p.as_ref()).into_owned()).unwrap_or_default();
                if out.function_error().is_some() {
                    return HookOutcome { exit_code: 1, output: body };
                }
                #[derive(serde::Deserialize)]
                struct Answer {
                    exit_code: i64,
                    #[serde(default)]
                    output: String,
                }
                match serde_json::from_str::<Answer>(&body) {
                    Ok(answer) => HookOutcome { exit_code: answer.exit_code, output: answer.output },
                    Err(_) => HookOutcome { exit_code: 0, output: body },
                }
            }
        }
    }
}
