//! The alternating rotation: each level has two logins, and a run changes the
//! password of the one consumers are not using, so the credentials a consumer
//! read before a run log in until the run after it. With the single rotation
//! the same consumer is refused from the moment its role's password changes.
//!
//! Every server has the master RDS gives: PostgreSQL 15 and 17 (16 changed what
//! a CREATEROLE master may do with the roles it makes), and MariaDB, each a
//! server of the test's own.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use dbroles_core::engine::{Level, Target};
use dbroles_core::model::request::Rotation;
use dbroles_core::provision::{provision_roles, Endpoint, Options, Outcome};
use dbroles_core::secrets::{RoleCredentials, SecretStore};
use dbroles_tests::postgres::PgVersion;
use dbroles_tests::*;
use secrecy::ExposeSecret;

async fn run(target: &Target, prefix: &str, store: &dyn SecretStore, rotation: Rotation) -> Outcome {
    let endpoint = Endpoint { host: "127.0.0.1".into(), port: target.port, db: "app".into(), engine: "any".into() };
    let options = Options { rotation, ..Options::default() };
    let outcome = provision_roles(target, &endpoint, prefix, store, &secret_ref(""), options).await.expect("a run");
    assert_completed(&outcome);
    outcome
}

/// What a consumer of `level` reads now, and what it read before the last run.
async fn stored(store: &dyn SecretStore, prefix: &str, level: Level) -> (RoleCredentials, Option<RoleCredentials>) {
    let id = store.secret_id(&secret_ref(&level.user(prefix)));
    (store.read(&id).await.unwrap().expect("stored credentials"), store.previous(&id).await.unwrap())
}

/// Eight runs one after another while a consumer of each level, holding what it
/// read before the run, opens a new connection every 20 ms until shortly after
/// the run: how often it was refused, and how often it tried.
async fn refusals_during_rotations(server: &RdsLike, target: &Target, rotation: Rotation) -> (usize, usize) {
    let (_dir, store) = own_store();
    let prefix = unique("r");
    run(target, &prefix, store.as_ref(), rotation).await;
    let (refusals, attempts) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let mut logins = Vec::new();
    for _ in 0..8 {
        let mut held = Vec::new();
        for level in Level::ALL {
            held.push(stored(store.as_ref(), &prefix, level).await.0);
        }
        let done = AtomicBool::new(false);
        let consumer = async {
            while !done.load(Ordering::SeqCst) {
                for credentials in &held {
                    attempts.fetch_add(1, Ordering::SeqCst);
                    if !server.logs_in(credentials).await {
                        refusals.fetch_add(1, Ordering::SeqCst);
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        let rotating = async {
            let outcome = run(target, &prefix, store.as_ref(), rotation).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            done.store(true, Ordering::SeqCst);
            outcome
        };
        let ((), outcome) = tokio::join!(consumer, rotating);
        logins.push(outcome.results[0].active_login.clone());
    }
    match rotation {
        Rotation::Single => assert!(logins.iter().all(Option::is_none), "no login named under single: {logins:?}"),
        Rotation::Alternating => {
            let (ro, alt) = (Some(Level::Ro.user(&prefix)), Some(Level::Ro.alternate(&prefix)));
            assert!(logins.chunks(2).all(|pair| pair == [alt.clone(), ro.clone()]), "the logins alternate: {logins:?}");
        }
    }
    (refusals.into_inner(), attempts.into_inner())
}

async fn consumers_are_refused_only_with_single(server: RdsLike, target: Target) {
    let (refused, tried) = refusals_during_rotations(&server, &target, Rotation::Alternating).await;
    assert!(tried >= 8 * 3 * 2, "the consumer tried during every rotation ({tried})");
    assert_eq!(refused, 0, "alternating: {refused} of {tried} logins refused");
    let (refused, tried) = refusals_during_rotations(&server, &target, Rotation::Single).await;
    // At least every attempt after each run, until the consumer reads again.
    assert!(refused >= 8 * 3, "single: only {refused} of {tried} logins refused");
}

#[tokio::test]
async fn postgres_15_consumers_holding_credentials_through_eight_rotations() {
    let (server, target) = RdsLike::postgres(PgVersion::V15).await;
    consumers_are_refused_only_with_single(server, target).await;
}

#[tokio::test]
async fn postgres_17_consumers_holding_credentials_through_eight_rotations() {
    let (server, target) = RdsLike::postgres(PgVersion::V17).await;
    consumers_are_refused_only_with_single(server, target).await;
}

#[tokio::test]
async fn mariadb_consumers_holding_credentials_through_eight_rotations() {
    let (server, target) = RdsLike::mariadb().await;
    consumers_are_refused_only_with_single(server, target).await;
}

/// Both logins of a level are one: what either `_ddl` login makes is the
/// level's and readable through both `_ro` logins, and what the level is
/// granted after a rotation both logins have after the next.
async fn two_logins_hold_one_level(server: RdsLike, target: Target) {
    let (_dir, store) = own_store();
    let prefix = unique("o");
    run(&target, &prefix, store.as_ref(), Rotation::Alternating).await;
    run(&target, &prefix, store.as_ref(), Rotation::Alternating).await;
    let (ddl, ddl_before) = stored(store.as_ref(), &prefix, Level::Ddl).await;
    let ddl_before = ddl_before.expect("the store keeps the previous credentials");
    assert_eq!(
        (ddl.user.as_str(), ddl_before.user.as_str()),
        (Level::Ddl.alternate(&prefix).as_str(), Level::Ddl.user(&prefix).as_str())
    );
    for (credentials, table) in [(&ddl, "by_alternate"), (&ddl_before, "by_role")] {
        let sql = format!("CREATE TABLE {table} (id int); INSERT INTO {table} VALUES (1)");
        server.run_as(&credentials.user, credentials.password.expose_secret(), &sql).await.expect("ddl creates a table");
        if let RdsLike::Postgres(_) = server {
            assert_eq!(server.owner(table).await, Level::Ddl.user(&prefix), "{table}: the level's role owns it");
        }
    }
    if let RdsLike::Postgres(_) = server {
        // Outside its level's role, the second login owns what it makes, until the next run.
        let sql = "SET ROLE NONE; CREATE TABLE stray (id int); INSERT INTO stray VALUES (1)";
        server.run_as(&ddl.user, ddl.password.expose_secret(), sql).await.unwrap();
        assert_eq!(server.owner("stray").await, ddl.user);
    }
    server.add_database(&target, "late").await;

    run(&target, &prefix, store.as_ref(), Rotation::Alternating).await;
    if let RdsLike::Postgres(_) = server {
        assert_eq!(server.owner("stray").await, Level::Ddl.user(&prefix), "the run gave the level what its second login made");
    }
    let (ro, ro_before) = stored(store.as_ref(), &prefix, Level::Ro).await;
    let ro_before = ro_before.expect("the store keeps the previous credentials");
    assert_ne!(ro.user, ro_before.user, "the store and its previous version name the two logins");
    let mut tables = vec!["by_alternate", "by_role", "items"];
    if let RdsLike::Postgres(_) = server {
        tables.push("stray");
    }
    for credentials in [&ro, &ro_before] {
        let password = credentials.password.expose_secret();
        for table in &tables {
            let read = server.run_as(&credentials.user, password, &format!("SELECT * FROM {table}")).await;
            assert!(read.is_ok(), "{} reads {table}: {read:?}", credentials.user);
        }
        let written = server.run_as(&credentials.user, password, "INSERT INTO by_role VALUES (2)").await;
        assert!(written.unwrap_err().contains("denied"), "{} writes", credentials.user);
        let late = match &server {
            RdsLike::Postgres(cluster) => match cluster.client(&credentials.user, password, "late").await {
                Ok(client) => client.batch_execute("SELECT * FROM public.t").await.map_err(|e| e.to_string()),
                Err(error) => Err(error.to_string()),
            },
            RdsLike::MariaDb(_) => server.run_as(&credentials.user, password, "SELECT * FROM late.t").await,
        };
        assert!(late.is_ok(), "{} reads the database added after a rotation: {late:?}", credentials.user);
    }
}

#[tokio::test]
async fn postgres_15_two_logins_hold_one_level() {
    let (server, target) = RdsLike::postgres(PgVersion::V15).await;
    two_logins_hold_one_level(server, target).await;
}

#[tokio::test]
async fn postgres_17_two_logins_hold_one_level() {
    let (server, target) = RdsLike::postgres(PgVersion::V17).await;
    two_logins_hold_one_level(server, target).await;
}

#[tokio::test]
async fn mariadb_two_logins_hold_one_level() {
    let (server, target) = RdsLike::mariadb().await;
    two_logins_hold_one_level(server, target).await;
}
