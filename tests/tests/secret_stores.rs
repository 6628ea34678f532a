//! The credential stores: AWS Secrets Manager against moto, and HashiCorp Vault's
//! KV v2 HTTP API against a test server that follows its documentation (no Vault
//! server can be installed on these machines).

use std::collections::HashMap;

use dbroles_core::model::job::SecretsProvider;
use dbroles_core::secrets::aws::AwsSecrets;
use dbroles_core::secrets::vault::VaultSecrets;
use dbroles_core::secrets::{RoleCredentials, SecretRef, SecretStore};
use dbroles_tests::*;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};

fn credentials(password: &str) -> RoleCredentials {
    RoleCredentials {
        host: "db.example.com".into(),
        port: 5432,
        user: "hoop_ro".into(),
        password: SecretString::from(password.to_string()),
        db: "customers".into(),
        engine: "postgres".into(),
        logins: Vec::new(),
    }
}

fn secret_ref(instance: &str) -> SecretRef {
    SecretRef {
        org: "acme".into(),
        instance_id: instance.into(),
        instance_arn: format!("arn:aws:rds:us-east-1:123456789012:db:{instance}"),
        job_id: "JOB-1".into(),
        user: "hoop_ro".into(),
        host: "db.example.com".into(),
    }
}

#[tokio::test]
async fn secrets_are_apart_per_account_and_one_dbroles_did_not_create_is_never_written() {
    let config = aws_config(&moto_endpoint()).await;
    let client = aws_sdk_secretsmanager::Client::new(&config);
    let store = AwsSecrets::new(client.clone(), "dbroles");
    let instance = unique("db-");
    let here = secret_ref(&instance);
    let elsewhere = SecretRef { instance_arn: format!("arn:aws:rds:eu-west-1:111111111111:db:{instance}"), ..here.clone() };
    assert_ne!(store.secret_id(&here), store.secret_id(&elsewhere), "the same name in two accounts is two secrets");
    assert_eq!(store.secret_id(&elsewhere), format!("dbroles/111111111111/eu-west-1/{instance}/hoop_ro"));

    // Somebody else's secret under that name: dbroles refuses it and leaves it as it was.
    let name = store.secret_id(&here);
    client.create_secret().name(&name).secret_string("theirs").send().await.unwrap();
    let error = store.stage(&here, &credentials("never-Written-1")).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        format!("the secret {name} exists and was not created by dbroles (it lacks the tag dbroles:managed=true): dbroles does not write into it")
    );
    let value = client.get_secret_value().secret_id(&name).send().await.unwrap();
    assert_eq!(value.secret_string(), Some("theirs"));
    assert_eq!(client.describe_secret().secret_id(&name).send().await.unwrap().version_ids_to_stages().unwrap().len(), 1);
}

#[tokio::test]
async fn aws_secrets_manager_stages_then_confirms_with_tags() {
    let config = aws_config(&moto_endpoint()).await;
    let client = aws_sdk_secretsmanager::Client::new(&config);
    let store = AwsSecrets::new(client.clone(), "dbroles");
    let instance = unique("db-");
    let secret = secret_ref(&instance);
    let name = store.secret_id(&secret);
    assert_eq!(
        name,
        format!("dbroles/123456789012/us-east-1/{instance}/hoop_ro"),
        "named after the account, the region and the server"
    );

    let first = store.stage(&secret, &credentials("first-Password-1")).await.unwrap();
    store.confirm(&first).await.unwrap();
    let second = store.stage(&secret, &credentials("second-Password-2")).await.unwrap();
    // Staged but not confirmed: the current password is still the first.
    let current = store.read(&name).await.unwrap().unwrap();
    assert_eq!(current.password.expose_secret(), "first-Password-1");
    store.confirm(&second).await.unwrap();
    let current = store.read(&name).await.unwrap().unwrap();
    assert_eq!(current.password.expose_secret(), "second-Password-2");

    let raw = client.get_secret_value().secret_id(&name).send().await.unwrap();
    let stored: Value = serde_json::from_str(raw.secret_string().unwrap()).unwrap();
    for key in ["HOST", "PORT", "USER", "PASSWORD", "DB", "ENGINE"] {
        assert!(stored.get(key).is_some(), "{key} missing from {}", raw.secret_string().unwrap().len());
    }
    let described = client.describe_secret().secret_id(&name).send().await.unwrap();
    let tags: HashMap<_, _> =
        described.tags().iter().map(|t| (t.key().unwrap().to_string(), t.value().unwrap().to_string())).collect();
    assert_eq!(tags.get("dbroles:job-id").map(String::as_str), Some("JOB-1"));
    assert_eq!(tags.get("dbroles:instance-arn"), Some(&secret.instance_arn));
    assert_eq!(tags.get("dbroles:managed").map(String::as_str), Some("true"));
    assert_eq!(tags.get("dbroles:org").map(String::as_str), Some("acme"));

    let info = store.info(&secret);
    assert_eq!(info.secrets_manager_provider, SecretsProvider::AwsSecretsManager);
    assert_eq!(info.secret_keys, ["HOST", "PORT", "USER", "PASSWORD", "DB"]);
    assert_eq!(info.secret_id, name);
}

#[tokio::test]
async fn vault_kv2_writes_the_documented_path_keys_and_headers() {
    let (address, vault) = vault_server().await;
    let store = VaultSecrets::new(&address, SecretString::from(VAULT_TOKEN), Some("team-a".into()), "dbsecrets/data/");
    let secret = secret_ref("db1");
    assert_eq!(store.secret_id(&secret), "dbsecrets/data/hoop_ro_db.example.com");

    let staged = store.stage(&secret, &credentials("vault-Password-1")).await.unwrap();
    assert_eq!(staged.version.as_deref(), Some("1"));
    assert!(store.read(&staged.secret_id).await.unwrap().is_none(), "consumers do not see a staged password");
    assert_eq!(store.pending(&staged.secret_id).await.unwrap().unwrap().1.password.expose_secret(), "vault-Password-1");
    store.confirm(&staged).await.unwrap();
    let read = store.read(&staged.secret_id).await.unwrap().unwrap();
    assert_eq!(read.password.expose_secret(), "vault-Password-1");
    assert_eq!((read.host.as_str(), read.port, read.db.as_str()), ("db.example.com", 5432, "customers"));
    assert!(store.pending(&staged.secret_id).await.unwrap().is_none(), "nothing is staged beyond what consumers read");

    let vault = vault.lock().unwrap();
    let (method, path, namespace, body) = &vault.requests[0];
    assert_eq!(
        (method.as_str(), path.as_str(), namespace.as_deref()),
        ("POST", "dbsecrets/data/dbroles-staged/hoop_ro_db.example.com", Some("team-a"))
    );
    let (_, _, _, promoted) =
        vault.requests.iter().find(|(_, path, _, _)| path == "dbsecrets/data/hoop_ro_db.example.com").unwrap();
    assert_eq!(promoted["options"]["cas"], 0, "written with check-and-set: no version yet");
    let keys: Vec<&String> = body["data"].as_object().unwrap().keys().collect();
    for key in ["HOST", "PORT", "USER", "PASSWORD", "DB"] {
        assert!(keys.iter().any(|k| k.as_str() == key), "{key} missing");
    }
    assert_eq!(vault.metadata["hoop_ro_db.example.com"]["custom_metadata"]["dbroles_confirmed_version"], "1");
    assert_eq!(store.info(&secret).secrets_manager_provider, SecretsProvider::Vault);
}

#[tokio::test]
async fn vault_errors_are_reported_without_the_token_or_password() {
    let (address, _) = vault_server().await;
    let secret = secret_ref("db1");
    let denied = VaultSecrets::new(&address, SecretString::from("s.wrong"), None, "dbsecrets/data/");
    let error = denied.stage(&secret, &credentials("vault-Password-2")).await.unwrap_err().to_string();
    assert!(error.contains("403") && error.contains("permission denied"), "{error}");
    assert!(!error.contains("s.wrong") && !error.contains("vault-Password-2"), "{error}");

    let unmounted = VaultSecrets::new(&address, SecretString::from(VAULT_TOKEN), None, "nomount/data/");
    let error = unmounted.stage(&secret, &credentials("x")).await.unwrap_err().to_string();
    assert!(error.contains("404"), "{error}");

    let down =
        VaultSecrets::new(&format!("http://127.0.0.1:{}", free_port()), SecretString::from(VAULT_TOKEN), None, "dbsecrets/data/");
    assert!(down.stage(&secret, &credentials("x")).await.is_err());
}

#[tokio::test]
async fn vault_promotion_writes_with_check_and_set_on_the_version_it_read() {
    let (address, vault) = vault_server().await;
    let store = VaultSecrets::new(&address, SecretString::from(VAULT_TOKEN), None, "dbsecrets/data/");
    let secret = secret_ref("db2");
    for password in ["vault-Password-3", "vault-Password-4"] {
        let staged = store.stage(&secret, &credentials(password)).await.unwrap();
        store.confirm(&staged).await.unwrap();
    }
    let vault = vault.lock().unwrap();
    let casts: Vec<&Value> = vault
        .requests
        .iter()
        .filter(|(method, path, _, _)| method == "POST" && path == "dbsecrets/data/hoop_ro_db.example.com")
        .map(|(_, _, _, body)| &body["options"]["cas"])
        .collect();
    assert_eq!(casts, [&json!(0), &json!(1)], "each promotion names the version it read");
}

#[tokio::test]
async fn the_own_store_keeps_each_organisations_credentials_apart() {
    let (_dir, store) = own_store();
    let acme = secret_ref("shared-db");
    let globex = SecretRef { org: "globex".into(), ..acme.clone() };
    for (secret, password) in [(&acme, "acme-Password-1"), (&globex, "globex-Password-2")] {
        let staged = store.stage(secret, &credentials(password)).await.unwrap();
        store.confirm(&staged).await.unwrap();
    }
    assert!(store.secret_id(&acme).starts_with("acme/"), "{}", store.secret_id(&acme));
    let read = |secret: SecretRef| {
        let store = store.clone();
        async move { store.read(&store.secret_id(&secret)).await.unwrap().unwrap().password.expose_secret().to_string() }
    };
    assert_eq!(read(acme).await, "acme-Password-1");
    assert_eq!(read(globex).await, "globex-Password-2", "one server, two organisations, two credentials");
}

#[tokio::test]
async fn on_aws_the_own_store_keeps_credentials_encrypted_with_kms() {
    use dbroles_core::config::CredentialsStore;
    use dbroles_core::secrets::database::DatabaseSecrets;
    use dbroles_core::secrets::kms::KmsSealer;
    use dbroles_core::store::dynamodb::DynamoStore;
    let aws = aws_config(&moto_endpoint()).await;
    let table = DynamoStore::new(aws_sdk_dynamodb::Client::new(&aws), unique("creds-"));
    table.create_table().await.unwrap();
    let table = std::sync::Arc::new(table);
    let CredentialsStore::Database { key } = own_store_on_kms(&aws).await else { unreachable!() };
    let kms = aws_sdk_kms::Client::new(&aws);
    let store = DatabaseSecrets::new(table.clone()).sealed_with(std::sync::Arc::new(KmsSealer { client: kms.clone(), key }));

    let secret = secret_ref("orders-db");
    let staged = store.stage(&secret, &credentials("sealed-Password-1")).await.unwrap();
    store.confirm(&staged).await.unwrap();
    let read = store.read(&store.secret_id(&secret)).await.unwrap().unwrap();
    assert_eq!(read.password.expose_secret(), "sealed-Password-1");
    // The item holds ciphertext only.
    let raw =
        dbroles_core::store::CredentialStore::get_credential(table.as_ref(), &store.secret_id(&secret)).await.unwrap().unwrap();
    assert!(raw.starts_with("kms:") && !raw.contains("sealed-Password-1"), "{raw}");
    // A value copied onto another credential's item does not decrypt there (the item id is the encryption context).
    let other = SecretRef { user: "hoop_rw".into(), ..secret.clone() };
    dbroles_core::store::CredentialStore::put_credential(table.as_ref(), &store.secret_id(&other), &raw).await.unwrap();
    assert!(store.read(&store.secret_id(&other)).await.is_err());
    // Without a key the store refuses to write, and says which setting is missing.
    let keyless = DatabaseSecrets::new(table).sealed_with(std::sync::Arc::new(KmsSealer { client: kms, key: None }));
    let error = keyless.stage(&secret, &credentials("never-Stored-1")).await.unwrap_err();
    assert!(error.to_string().contains("DBROLES_CREDENTIALS_KEY is not set"), "{error}");
}

/// A retired role's credentials go from every store, the staged and previous
/// versions with them; Secrets Manager keeps the secret for its recovery window,
/// and a later job on the same server restores it instead of failing to create it.
#[tokio::test]
async fn a_retired_roles_credentials_are_deleted_from_every_store() {
    let config = aws_config(&moto_endpoint()).await;
    let client = aws_sdk_secretsmanager::Client::new(&config);
    let (address, _vault) = vault_server().await;
    let (_dir, own) = own_store();
    let stores: Vec<Box<dyn SecretStore>> = vec![
        Box::new(AwsSecrets::new(client.clone(), "dbroles")),
        Box::new(VaultSecrets::new(&address, SecretString::from(VAULT_TOKEN), None, "dbsecrets/data/")),
        Box::new(own.as_ref().clone()),
    ];
    for store in &stores {
        let secret = secret_ref(&unique("db-"));
        for password in ["first-Password-1", "second-Password-2"] {
            let staged = store.stage(&secret, &credentials(password)).await.unwrap();
            store.confirm(&staged).await.unwrap();
        }
        store.stage(&secret, &credentials("staged-Password-3")).await.unwrap();
        let id = store.secret_id(&secret);
        assert!(store.previous(&id).await.unwrap().is_some(), "{:?}: the previous credentials are kept", store.provider());
        store.delete(&id).await.unwrap();
        let provider = store.provider();
        assert!(store.read(&id).await.unwrap().is_none(), "{provider:?}: no current credentials");
        assert!(store.previous(&id).await.unwrap().is_none(), "{provider:?}: no previous credentials");
        assert!(store.pending(&id).await.unwrap().is_none(), "{provider:?}: no staged credentials");
        store.delete(&id).await.expect("deleting what is gone is no error");

        let again = store.stage(&secret, &credentials("again-Password-4")).await.expect("provisioned again");
        store.confirm(&again).await.unwrap();
        assert_eq!(store.read(&id).await.unwrap().unwrap().password.expose_secret(), "again-Password-4");
    }
}
