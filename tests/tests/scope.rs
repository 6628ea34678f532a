//! `scope`: a run grants its levels only in the databases and schemas of its
//! scope, withdraws what the roles hold outside it when a later run narrows it,
//! and provisions only the levels it names. PostgreSQL 15 and 17 and MariaDB,
//! each a server of the test's own with the master RDS gives.

use dbroles_core::engine::{Level, Target};
use dbroles_core::model::scope::{Patterns, Scope};
use dbroles_core::provision::{provision_roles, Endpoint, Options, Outcome};
use dbroles_core::secrets::{RoleCredentials, SecretStore};
use dbroles_tests::postgres::PgVersion;
use dbroles_tests::*;
use secrecy::ExposeSecret;

async fn run(target: &Target, prefix: &str, store: &dyn SecretStore, scope: &Scope) -> Outcome {
    let endpoint = Endpoint { host: "127.0.0.1".into(), port: target.port, db: "app".into(), engine: "any".into() };
    let options = Options { scope, ..Options::default() };
    let outcome = provision_roles(target, &endpoint, prefix, store, &secret_ref(""), options).await.expect("a run");
    assert_completed(&outcome);
    outcome
}

async fn stored(store: &dyn SecretStore, user: &str) -> RoleCredentials {
    store.read(&store.secret_id(&secret_ref(user))).await.unwrap().expect("stored credentials")
}

fn excluding(databases: &[&str], schemas: &[&str]) -> Scope {
    let patterns = |names: &[&str]| Patterns { include: Vec::new(), exclude: names.iter().map(|n| n.to_string()).collect() };
    Scope { databases: patterns(databases), schemas: patterns(schemas), levels: Vec::new() }
}

/// The master makes the database `archive` (a table `t`) and, on PostgreSQL, the schema `app.reports` (a table `r`).
async fn more_to_scope(server: &RdsLike, target: &Target) {
    server.add_database(target, "archive").await;
    if let RdsLike::Postgres(cluster) = server {
        let app = cluster.client("master", target.master_password.expose_secret(), "app").await.unwrap();
        app.batch_execute("CREATE SCHEMA reports; CREATE TABLE reports.r (id int); INSERT INTO reports.r VALUES (1)")
            .await
            .unwrap();
    }
}

/// Reads `table` (`db.schema.table` on PostgreSQL, `db.table` on MariaDB) as a login.
async fn reads(server: &RdsLike, login: &RoleCredentials, db: &str, table: &str) -> Result<(), String> {
    let password = login.password.expose_secret();
    match server {
        RdsLike::Postgres(cluster) => {
            let message = |e: tokio_postgres::Error| e.as_db_error().map_or(e.to_string(), |db| db.message().to_string());
            let client = cluster.client(&login.user, password, db).await.map_err(message)?;
            client.batch_execute(&format!("SELECT * FROM {table}")).await.map_err(message)
        }
        RdsLike::MariaDb(_) => server.run_as(&login.user, password, &format!("SELECT * FROM {db}.{table}")).await,
    }
}

async fn a_narrower_scope_withdraws_what_falls_outside(server: RdsLike, target: Target) {
    let postgres = matches!(server, RdsLike::Postgres(_));
    let (_dir, store) = own_store();
    let prefix = unique("s");
    more_to_scope(&server, &target).await;
    let (archive, reports, items) = match postgres {
        true => ("public.t", "reports.r", "public.items"),
        false => ("t", "", "items"),
    };

    run(&target, &prefix, store.as_ref(), &Scope::default()).await;
    let ro = stored(store.as_ref(), &Level::Ro.user(&prefix)).await;
    assert!(reads(&server, &ro, "archive", archive).await.is_ok(), "everything is in the default scope");
    if postgres {
        assert!(reads(&server, &ro, "app", reports).await.is_ok());
    }

    let narrower = if postgres { excluding(&["archive"], &["reports"]) } else { excluding(&["archive"], &[]) };
    run(&target, &prefix, store.as_ref(), &narrower).await;
    let ro = stored(store.as_ref(), &Level::Ro.user(&prefix)).await;
    assert!(reads(&server, &ro, "app", items).await.is_ok(), "inside the scope");
    let denied = reads(&server, &ro, "archive", archive).await.unwrap_err();
    assert!(denied.contains("denied"), "the excluded database: {denied}");
    if postgres {
        let denied = reads(&server, &ro, "app", reports).await.unwrap_err();
        assert!(denied.contains("denied"), "the excluded schema: {denied}");
        // Nor what the master makes there later: the default privileges went too.
        let RdsLike::Postgres(cluster) = &server else { unreachable!() };
        let master = cluster.client("master", target.master_password.expose_secret(), "app").await.unwrap();
        master.batch_execute("CREATE TABLE reports.later (id int)").await.unwrap();
        assert!(reads(&server, &ro, "app", "reports.later").await.unwrap_err().contains("denied"));
    }

    // Only the levels named: one role, one result.
    let only_ro = unique("l");
    let scope = Scope { levels: vec![Level::Ro], ..Scope::default() };
    let outcome = run(&target, &only_ro, store.as_ref(), &scope).await;
    let users: Vec<&str> = outcome.results.iter().map(|result| result.user_role.as_str()).collect();
    assert_eq!(users, [Level::Ro.user(&only_ro)]);
    let rw = RoleCredentials { user: Level::Rw.user(&only_ro), ..stored(store.as_ref(), &Level::Ro.user(&only_ro)).await };
    assert!(!server.logs_in(&rw).await, "no rw role");
}

#[tokio::test]
async fn postgres_15_scope() {
    let (server, target) = RdsLike::postgres(PgVersion::V15).await;
    a_narrower_scope_withdraws_what_falls_outside(server, target).await;
}

#[tokio::test]
async fn postgres_17_scope() {
    let (server, target) = RdsLike::postgres(PgVersion::V17).await;
    a_narrower_scope_withdraws_what_falls_outside(server, target).await;
}

#[tokio::test]
async fn mariadb_scope() {
    let (server, target) = RdsLike::mariadb().await;
    a_narrower_scope_withdraws_what_falls_outside(server, target).await;
}
