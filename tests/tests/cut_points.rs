//! Credentials never strand, whatever the store, the engine and the rotation: a run cut at each
//! point between staging and promotion leaves what a consumer reads logging in
//! (where the cut left the database ahead of the store, once the next run has
//! promoted what the database has). No role ends `failed` with a stored password
//! that does not log in.
//!
//! Under the alternating rotation, what consumers read before the run logs in
//! too, at every cut, and each store keeps the previous credentials, which log in.
//!
//! Stores: dbroles' own, Secrets Manager (moto) and Vault (the tests' KV v2).
//! Engines: PostgreSQL with an RDS-like master, MariaDB with a master without SUPER.

use std::sync::Arc;
use std::time::Duration;

use dbroles_core::engine::{Family, Level, Target};
use dbroles_core::model::job::Phase;
use dbroles_core::model::request::Rotation;
use dbroles_core::provision::{provision_roles, Endpoint, Options, Outcome, ProvisionError};
use dbroles_core::secrets::aws::AwsSecrets;
use dbroles_core::secrets::vault::VaultSecrets;
use dbroles_core::secrets::{RoleCredentials, SecretStore};
use dbroles_tests::*;
use mysql_async::prelude::Queryable;
use secrecy::{ExposeSecret, SecretString};

enum Kind {
    Own,
    SecretsManager,
    Vault,
}

/// A store of the kind, and what must live as long as it.
async fn store(kind: Kind) -> (Arc<dyn SecretStore>, Box<dyn std::any::Any>) {
    match kind {
        Kind::Own => {
            let (dir, store) = own_store();
            (store, Box::new(dir))
        }
        Kind::SecretsManager => {
            let client = aws_sdk_secretsmanager::Client::new(&aws_config(&moto_endpoint()).await);
            (Arc::new(AwsSecrets::new(client, &unique("cut"))), Box::new(()))
        }
        Kind::Vault => {
            let (address, vault) = vault_server().await;
            (Arc::new(VaultSecrets::new(&address, SecretString::from(VAULT_TOKEN), None, "dbsecrets/data/")), Box::new(vault))
        }
    }
}

/// A server with the master RDS gives, and a login as a role on it.
enum Server {
    Postgres(PgCluster),
    MariaDb { master: String },
}

impl Server {
    async fn start(family: Family) -> (Self, Target) {
        match family {
            Family::Postgres => {
                let cluster = PgCluster::start();
                let password = cluster.rds_like().await;
                let target = target(Family::Postgres, cluster.port, "master", password);
                (Server::Postgres(cluster), target)
            }
            Family::MySql => {
                let master = unique("cutm");
                let password = rds_like_master(&master).await;
                let target = target(Family::MySql, 3306, &master, password);
                (Server::MariaDb { master }, target)
            }
        }
    }

    async fn logs_in(&self, user: &str, password: &str) -> bool {
        match self {
            Server::Postgres(cluster) => cluster.client(user, password, "app").await.is_ok(),
            Server::MariaDb { .. } => mariadb(user, password).await.is_ok(),
        }
    }

    async fn drop_users(&self, prefix: &str) {
        if let Server::MariaDb { master } = self {
            let mut root = mariadb("root", "").await.unwrap();
            for user in Level::ALL.iter().map(|level| level.user(prefix)).chain([master.clone()]) {
                root.query_drop(format!("DROP USER IF EXISTS '{user}'@'%'")).await.unwrap();
            }
        }
    }
}

async fn run(target: &Target, prefix: &str, store: &dyn SecretStore, rotation: Rotation) -> Result<Outcome, ProvisionError> {
    let endpoint = Endpoint { host: "127.0.0.1".into(), port: target.port, db: String::new(), engine: "any".into() };
    provision_roles(target, &endpoint, prefix, store, &secret_ref(""), Options { rotation, ..Options::default() }).await
}

/// What consumers of each level read from the store now.
async fn read(store: &dyn SecretStore, prefix: &str) -> Vec<RoleCredentials> {
    let mut stored = Vec::new();
    for level in Level::ALL {
        let id = store.secret_id(&secret_ref(&level.user(prefix)));
        stored.push(store.read(&id).await.unwrap().expect("stored credentials"));
    }
    stored
}

/// Every login in `held` logs in.
async fn log_in(server: &Server, held: &[RoleCredentials], when: &str) {
    for credentials in held {
        assert!(
            server.logs_in(&credentials.user, credentials.password.expose_secret()).await,
            "{when}: {} does not log in with what consumers read",
            credentials.user
        );
    }
}

/// Every role logs in with what a consumer reads from the store.
async fn consumers_log_in(server: &Server, store: &dyn SecretStore, prefix: &str, when: &str) {
    log_in(server, &read(store, prefix).await, when).await;
}

/// The credentials stored before the last promotion, which the alternating rotation leaves working.
async fn previous_log_in(server: &Server, store: &dyn SecretStore, prefix: &str) {
    let mut previous = Vec::new();
    for level in Level::ALL {
        let id = store.secret_id(&secret_ref(&level.user(prefix)));
        previous.push(store.previous(&id).await.unwrap().expect("the store keeps the previous credentials"));
    }
    let now = read(store, prefix).await;
    assert!(previous.iter().zip(&now).all(|(before, now)| before.user != now.user), "the two name both logins of each level");
    log_in(server, &previous, "the previous credentials").await;
}

async fn every_cut_leaves_a_password_that_logs_in(family: Family, kind: Kind, rotation: Rotation) {
    let (server, target) = Server::start(family).await;
    let (store, _keep) = store(kind).await;
    let prefix = unique("c");
    // Removed when the test ends, also if it fails before `drop_users`.
    let _leaves = match &server {
        Server::MariaDb { master } => Leaves::new().prefix(&prefix).user(master),
        Server::Postgres(_) => Leaves::new(),
    };
    let first = run(&target, &prefix, store.as_ref(), rotation).await.unwrap();
    assert!(first.all_completed(), "{:?}", first.results);
    consumers_log_in(&server, store.as_ref(), &prefix, "after the first run").await;
    let alternating = rotation == Rotation::Alternating;
    if alternating {
        let second = run(&target, &prefix, store.as_ref(), rotation).await.unwrap();
        assert!(second.all_completed(), "{:?}", second.results);
        previous_log_in(&server, store.as_ref(), &prefix).await;
    }

    for cut in [Cut::Staging, Cut::Promotion, Cut::Death] {
        // What consumers read before the run: under the alternating rotation it logs in whatever the cut.
        let held = read(store.as_ref(), &prefix).await;
        let faulty = FaultyStore { inner: store.clone(), cut };
        match tokio::time::timeout(Duration::from_secs(15), run(&target, &prefix, &faulty, rotation)).await {
            Ok(Err(error)) => assert_eq!(cut, Cut::Staging, "{cut:?}: {error}"),
            Ok(Ok(outcome)) => {
                assert_eq!(cut, Cut::Promotion);
                let said = match alternating {
                    true => "consumers keep the login the store names, whose password did not change",
                    false => "the previous password is back in place",
                };
                for result in &outcome.results {
                    assert_eq!(result.status, Phase::Failed);
                    assert!(result.message.contains(said), "{}", result.message);
                }
            }
            Err(_) => {
                assert_eq!(cut, Cut::Death);
                if alternating {
                    log_in(&server, &held, "after the run died").await;
                    consumers_log_in(&server, store.as_ref(), &prefix, "after the run died").await;
                }
                let next = run(&target, &prefix, store.as_ref(), rotation).await.unwrap();
                assert!(next.all_completed(), "the next run heals the cut: {:?}", next.results);
            }
        }
        consumers_log_in(&server, store.as_ref(), &prefix, &format!("{cut:?}")).await;
        if alternating {
            log_in(&server, &held, &format!("{cut:?}, what consumers read before the run")).await;
        }
    }
    server.drop_users(&prefix).await;
}

#[tokio::test]
async fn postgres_with_the_own_store() {
    every_cut_leaves_a_password_that_logs_in(Family::Postgres, Kind::Own, Rotation::Single).await;
}

#[tokio::test]
async fn postgres_with_secrets_manager() {
    every_cut_leaves_a_password_that_logs_in(Family::Postgres, Kind::SecretsManager, Rotation::Single).await;
}

#[tokio::test]
async fn postgres_with_vault() {
    every_cut_leaves_a_password_that_logs_in(Family::Postgres, Kind::Vault, Rotation::Single).await;
}

#[tokio::test]
async fn mariadb_with_the_own_store() {
    every_cut_leaves_a_password_that_logs_in(Family::MySql, Kind::Own, Rotation::Single).await;
}

#[tokio::test]
async fn mariadb_with_secrets_manager() {
    every_cut_leaves_a_password_that_logs_in(Family::MySql, Kind::SecretsManager, Rotation::Single).await;
}

#[tokio::test]
async fn mariadb_with_vault() {
    every_cut_leaves_a_password_that_logs_in(Family::MySql, Kind::Vault, Rotation::Single).await;
}

#[tokio::test]
async fn alternating_postgres_with_the_own_store() {
    every_cut_leaves_a_password_that_logs_in(Family::Postgres, Kind::Own, Rotation::Alternating).await;
}

#[tokio::test]
async fn alternating_postgres_with_secrets_manager() {
    every_cut_leaves_a_password_that_logs_in(Family::Postgres, Kind::SecretsManager, Rotation::Alternating).await;
}

#[tokio::test]
async fn alternating_postgres_with_vault() {
    every_cut_leaves_a_password_that_logs_in(Family::Postgres, Kind::Vault, Rotation::Alternating).await;
}

#[tokio::test]
async fn alternating_mariadb_with_the_own_store() {
    every_cut_leaves_a_password_that_logs_in(Family::MySql, Kind::Own, Rotation::Alternating).await;
}

#[tokio::test]
async fn alternating_mariadb_with_secrets_manager() {
    every_cut_leaves_a_password_that_logs_in(Family::MySql, Kind::SecretsManager, Rotation::Alternating).await;
}

#[tokio::test]
async fn alternating_mariadb_with_vault() {
    every_cut_leaves_a_password_that_logs_in(Family::MySql, Kind::Vault, Rotation::Alternating).await;
}
