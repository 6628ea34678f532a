//! The webhook: the finished job POSTed in hoop.dev's envelope
//! (`{"event_type": "dbroles.job.finished", "event_payload": <job>}`), signed per
//! Standard Webhooks, retried with back-off.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use async_trait::async_trait;

use super::{NotifyError, Webhook};
use crate::config::{webhook_key, WebhookSettings};
use crate::model::job::{Job, WebhookStatus};

/// POSTs the finished job over HTTP as [`WebhookSettings`] say.
#[derive(Clone)]
pub struct HttpWebhook {
    pub settings: WebhookSettings,
}

/// The `webhook-signature` header value: `v1,<base64 HMAC-SHA256 of "id.timestamp.body">`.
pub fn sign_webhook(secret: &str, id: &str, timestamp: i64, body: &str) -> Result<String, NotifyError> {
    let key = webhook_key(secret).ok_or_else(|| NotifyError("the webhook secret is not whsec_<base64>".into()))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).map_err(|e| NotifyError(e.to_string()))?;
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    Ok(format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())))
}

/// The `event_type` of a finished job's webhook.
pub const JOB_FINISHED: &str = "dbroles.job.finished";

/// What the webhook POSTs, as hoop.dev sends it.
#[derive(serde::Serialize)]
struct Envelope<'a> {
    event_type: &'static str,
    event_payload: &'a Job,
}

/// A status for a webhook that was never sent.
fn unsent(message: String) -> WebhookStatus {
    WebhookStatus { delivered: false, attempts: 0, status_code: None, message }
}

impl HttpWebhook {
    /// One signed POST of `body`, timestamped now.
    async fn post(
        &self,
        client: &reqwest::Client,
        id: &str,
        body: &str,
    ) -> Result<reqwest::Result<reqwest::Response>, NotifyError> {
        use secrecy::ExposeSecret;
        let timestamp = chrono::Utc::now().timestamp();
        let signature = sign_webhook(self.settings.secret.expose_secret(), id, timestamp, body)?;
        Ok(client
            .post(&self.settings.url)
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body.to_string())
            .send()
            .await)
    }
}

#[async_trait]
impl Webhook for HttpWebhook {
    /// POSTs the job; retries on 5xx, 429 and transport errors with back-off.
    async fn deliver(&self, job: &Job) -> WebhookStatus {
        let settings = &self.settings;
        let body = serde_json::to_string(&Envelope { event_type: JOB_FINISHED, event_payload: job }).expect("a job serialises");
        let id = format!("msg_{}", job.id);
        let client = match reqwest::Client::builder().timeout(settings.timeout).build() {
            Ok(client) => client,
            Err(error) => return unsent(error.to_string()),
        };
        let mut wait = settings.backoff;
        let mut last = unsent(String::new());
        for attempt in 1..=settings.attempts.max(1) {
            let sent = match self.post(&client, &id, &body).await {
                Ok(sent) => sent,
                Err(error) => return unsent(error.to_string()),
            };
            last.attempts = attempt;
            match sent {
                Ok(response) if response.status().is_success() => {
                    let code = response.status().as_u16();
                    return WebhookStatus {
                        delivered: true,
                        attempts: attempt,
                        status_code: Some(code),
                        message: format!("delivered: HTTP {code}"),
                    };
                }
                // The URL is the deployment's and may carry a token: no message names it.
                Ok(response) => {
                    let code = response.status();
                    (last.status_code, last.message) = (Some(code.as_u16()), format!("the webhook answered HTTP {code}"));
                    if !(code.is_server_error() || code == reqwest::StatusCode::TOO_MANY_REQUESTS) {
                        return last;
                    }
                }
                Err(error) => {
                    last.status_code = None;
                    let why = if error.is_timeout() { "timed out".to_string() } else { error.without_url().to_string() };
                    last.message = format!("the webhook: {why}");
                }
            }
            if attempt < settings.attempts {
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
        }
        last.message = format!("not delivered after {} attempts: {}", last.attempts, last.message);
        last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification.
    #[test]
    fn signatures_match_the_specification_example() {
        let signature = sign_webhook(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            r#"{"test": 2432232314}"#,
        )
        .unwrap();
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    /// A webhook URL may carry a token: no status message repeats it.
    #[tokio::test]
    async fn the_status_never_names_the_url() {
        let refusing = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = refusing.local_addr().unwrap().port();
        drop(refusing);
        let answering = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let answering_port = answering.local_addr().unwrap().port();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok((mut stream, _)) = answering.accept().await {
                let mut buffer = [0; 4096];
                let _ = stream.read(&mut buffer).await;
                let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n").await;
            }
        });
        let job: Job = serde_json::from_value(serde_json::json!({
            "completed_at": null, "created_at": "2026-11-22T10:00:00Z", "hook_status": null,
            "id": "J", "org_id": "acme", "spec": null, "status": null
        }))
        .unwrap();
        for port in [port, answering_port] {
            let webhook = HttpWebhook {
                settings: WebhookSettings {
                    url: format!("http://127.0.0.1:{port}/hooks?token=s3cr3t-in-url"),
                    secret: secrecy::SecretString::from("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_string()),
                    attempts: 1,
                    backoff: std::time::Duration::from_millis(1),
                    timeout: std::time::Duration::from_secs(2),
                },
            };
            let status = webhook.deliver(&job).await;
            assert!(!status.delivered);
            assert!(!status.message.contains("s3cr3t") && !status.message.contains("/hooks"), "{}", status.message);
            assert!(status.message.contains("the webhook"), "{}", status.message);
        }
    }
}
