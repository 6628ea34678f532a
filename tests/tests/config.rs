//! A deployment's secret settings come from Secrets Manager (moto), named by ARN,
//! so the webhook secret and the Vault token never sit in a function's configuration.
//! One test in its own binary: it sets process-wide environment variables.

use dbroles_core::config::Config;
use dbroles_core::model::request::Rotation;
use dbroles_core::wiring;
use dbroles_tests::{aws_config, moto_endpoint, unique};
use secrecy::ExposeSecret;

#[tokio::test]
async fn the_webhook_secret_and_the_vault_token_are_read_from_secrets_manager() {
    let aws = aws_config(&moto_endpoint()).await;
    let secrets = aws_sdk_secretsmanager::Client::new(&aws);
    let mut arns = Vec::new();
    for value in ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n", "hvs.vault-token-from-secrets-manager"] {
        let created = secrets.create_secret().name(unique("dbroles/settings/")).secret_string(value).send().await.unwrap();
        arns.push(created.arn.unwrap());
    }
    std::env::set_var("DBROLES_TABLE", unique("jobs-"));
    std::env::set_var("DBROLES_WEBHOOK_URL", "https://hooks.example.com/dbroles");
    std::env::set_var("DBROLES_WEBHOOK_SECRET_ARN", &arns[0]);
    std::env::set_var("DBROLES_VAULT_ADDR", "https://vault.example.com:8200");
    std::env::set_var("DBROLES_VAULT_TOKEN_ARN", &arns[1]);

    let config = Config::from_env().unwrap();
    let webhook = wiring::webhook_settings(&config, &secrets).await.unwrap().expect("the webhook is configured");
    assert_eq!(webhook.secret.expose_secret(), "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "read, and trimmed");
    let vault = wiring::vault_settings(&config, &secrets).await.unwrap().expect("Vault is configured");
    assert_eq!(vault.token.expose_secret(), "hvs.vault-token-from-secrets-manager");
    let deps = wiring::aws(&config, &aws).await.unwrap();
    assert!(deps.webhook.is_some() && deps.vault.is_some(), "the functions have both");

    // A secret that is not there stops the function at start, naming the setting.
    let missing = arns[0].replace("dbroles/settings/", "dbroles/gone/");
    std::env::set_var("DBROLES_WEBHOOK_SECRET_ARN", &missing);
    let config = Config::from_env().unwrap();
    let error = wiring::aws(&config, &aws).await.err().expect("a missing secret is an error").to_string();
    assert!(error.starts_with(&format!("DBROLES_WEBHOOK_SECRET_ARN={missing}: ")), "{error}");
    assert!(error.contains("ResourceNotFoundException"), "{error}");

    std::env::set_var("DBROLES_WEBHOOK_SECRET_ARN", &arns[0]);

    // A malformed setting stops the function at start too, naming the variable.
    std::env::set_var("DBROLES_DEFAULT_AGENT_ID", "not-an-agent");
    let error = Config::from_env().err().expect("a malformed agent id is an error").to_string();
    assert!(error.starts_with("DBROLES_DEFAULT_AGENT_ID=not-an-agent: must be a UUID"), "{error}");
    std::env::remove_var("DBROLES_DEFAULT_AGENT_ID");
    std::env::set_var("DBROLES_ROTATION", "sometimes");
    let error = Config::from_env().err().expect("an unknown rotation is an error").to_string();
    assert!(
        error.starts_with("DBROLES_ROTATION=sometimes: unknown variant `sometimes`, expected `single` or `alternating`"),
        "{error}"
    );
    std::env::set_var("DBROLES_ROTATION", "alternating");
    assert_eq!(Config::from_env().unwrap().settings.rotation, Rotation::Alternating, "RotationStrategy's value");
    std::env::remove_var("DBROLES_ROTATION");
    std::env::set_var("DBROLES_MAX_DB_CONNECTIONS", "0");
    let error = Config::from_env().err().expect("a bound of no connection is an error").to_string();
    assert_eq!(error, "DBROLES_MAX_DB_CONNECTIONS=0: must be 1 to 32");
    std::env::set_var("DBROLES_MAX_DB_CONNECTIONS", "8");
    let settings = Config::from_env().unwrap().settings;
    assert_eq!(settings.max_db_connections, 8, "MaxDbConnections' value");
    let mut request: dbroles_core::model::request::CreateJobRequest = serde_json::from_value(serde_json::json!({
        "agent_id": "00000000-0000-0000-0000-000000000000",
        "aws": {"instance_arn": "arn:aws:rds:us-east-1:111111111111:db:one"},
        "connection_prefix_name": "p-"
    }))
    .unwrap();
    assert_eq!(settings.max_db_connections_of(&request), 8, "a job that does not say gets the deployment's bound");
    request.aws.max_db_connections = Some(2);
    assert_eq!(settings.max_db_connections_of(&request), 2, "a job's own bound wins");
    std::env::remove_var("DBROLES_MAX_DB_CONNECTIONS");
    std::env::set_var("DBROLES_WEBHOOK_SECRET", "whsec_not base64!");
    let config = Config::from_env().unwrap();
    let error = wiring::aws(&config, &aws).await.err().expect("a malformed webhook secret is an error").to_string();
    assert_eq!(error, "DBROLES_WEBHOOK_SECRET: the webhook secret is not whsec_<base64>");
}
