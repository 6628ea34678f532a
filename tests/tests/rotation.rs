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

use dbroles_core::engine::{Family, Level, Target};
use dbroles_core::model::request::Rotation;
use dbroles_core::provision::{provision_roles, Endpoint, Options, Outcome};
use dbroles_core::secrets::{RoleCredentials, SecretStore};
use dbroles_tests::postgres::PgVersion;
use dbroles_tests::*;
use mysql_async::prelude::Queryable;
use secrecy::ExposeSecret;

/// A server of the test's own with an RDS-like master, and a database `app`
/// whose table `items` (one row) the master made.
enum Server {
    Postgres(PgCluster),
    MariaDb(MariaDbServer),
}

impl Server {
    async fn postgres(version: PgVersion) -> (Self, Target) {
        let cluster = PgCluster::start_version(version, &["127.0.0.1", "localhost"]);
        let password = cluster.rds_like().await;
        let target = target(Family::Postgres, cluster.port, "master", password);
        (Server::Postgres(cluster), target)
    }

    async fn mariadb() -> (Self, Target) {
        let server = MariaDbServer::start_for(&["127.0.0.1"]).await;
        let password = server.rds_like_master("master").await;
        let mut master = server.connect("master", password).await.expect("the master logs in");
        master
            .query_drop("CREATE DATABASE app; CREATE TABLE app.items (id int); INSERT INTO app.items VALUES (1)")
            .await
            .expect("the master makes app.items");
        let target = target(Family::MySql, server.port, "master", password);
        (Server::MariaDb(server), target)
    }

    /// Runs `sql` as a login, in `app`; the server's message if it is refused.
    async fn run_as(&self, user: &str, password: &str, sql: &str) -> Result<(), String> {
        match self {
            Server::Postgres(cluster) => {
                let client = cluster.client(user, password, "app").await.map_err(|e| e.to_string())?;
                client.batch_execute(sql).await.map_err(|e| e.as_db_error().map_or(e.to_string(), |db| db.message().into()))
            }
            Server::MariaDb(server) => {
                let mut conn = server.connect(user, password).await.map_err(|e| e.to_string())?;
                conn.query_drop(format!("USE app; {sql}")).await.map_err(|e| e.to_string())?;
                conn.disconnect().await.map_err(|e| e.to_string())
            }
        }
    }

    async fn logs_in(&self, credentials: &RoleCredentials) -> bool {
        self.run_as(&credentials.user, credentials.password.expose_secret(), "SELECT 1").await.is_ok()
    }

    /// Makes the database `late` with a table `t` (one row), as its master would after a run.
    async fn add_database(&self, target: &Target) {
        let password = target.master_password.expose_secret();
        match self {
            Server::Postgres(cluster) => {
                let master = cluster.client("master", password, "postgres").await.unwrap();
                master.batch_execute("CREATE DATABASE late").await.unwrap();
                let late = cluster.client("master", password, "late").await.unwrap();
                late.batch_execute("CREATE TABLE public.t (id int); INSERT INTO public.t VALUES (1)").await.unwrap();
            }
            Server::MariaDb(server) => {
                let mut master = server.connect("master", password).await.unwrap();
                master
                    .query_drop("CREATE DATABASE late; CREATE TABLE late.t (id int); INSERT INTO late.t VALUES (1)")
                    .await
                    .unwrap();
            }
        }
    }

    /// The owner of `public.<table>` in `app` (PostgreSQL).
    async fn owner(&self, table: &str) -> String {
        let Server::Postgres(cluster) = self else { unreachable!("MariaDB tables have no owner") };
        let su = cluster.superuser("app").await;
        let row = su.query_one("SELECT tableowner::text FROM pg_tables WHERE tablename = $1", &[&table]).await.unwrap();
        row.get(0)
    }
}

async fn run(target: &Target, prefix: &str, store: &dyn SecretStore, rotation: Rotation) -> Outcome {
    let endpoint = Endpoint { host: "127.0.0.1".into(), port: target.port, db: "app".into(), engine: "any".into() };
    let options = Options { adopt: false, rotation };
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
async fn refusals_during_rotations(server: &Server, target: &Target, rotation: Rotation) -> (usize, usize) {
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

async fn consumers_are_refused_only_with_single(server: Server, target: Target) {
    let (refused, tried) = refusals_during_rotations(&server, &target, Rotation::Alternating).await;
    assert!(tried >= 8 * 3 * 2, "the consumer tried during every rotation ({tried})");
    assert_eq!(refused, 0, "alternating: {refused} of {tried} logins refused");
    let (refused, tried) = refusals_during_rotations(&server, &target, Rotation::Single).await;
    // At least every attempt after each run, until the consumer reads again.
    assert!(refused >= 8 * 3, "single: only {refused} of {tried} logins refused");
}

#[tokio::test]
async fn postgres_15_consumers_holding_credentials_through_eight_rotations() {
    let (server, target) = Server::postgres(PgVersion::V15).await;
    consumers_are_refused_only_with_single(server, target).await;
}

#[tokio::test]
async fn postgres_17_consumers_holding_credentials_through_eight_rotations() {
    let (server, target) = Server::postgres(PgVersion::V17).await;
    consumers_are_refused_only_with_single(server, target).await;
}

#[tokio::test]
async fn mariadb_consumers_holding_credentials_through_eight_rotations() {
    let (server, target) = Server::mariadb().await;
    consumers_are_refused_only_with_single(server, target).await;
}

/// Both logins of a level are one: what either `_ddl` login makes is the
/// level's and readable through both `_ro` logins, and what the level is
/// granted after a rotation both logins have after the next.
async fn two_logins_hold_one_level(server: Server, target: Target) {
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
        if let Server::Postgres(_) = server {
            assert_eq!(server.owner(table).await, Level::Ddl.user(&prefix), "{table}: the level's role owns it");
        }
    }
    if let Server::Postgres(_) = server {
        // Outside its level's role, the second login owns what it makes, until the next run.
        let sql = "SET ROLE NONE; CREATE TABLE stray (id int); INSERT INTO stray VALUES (1)";
        server.run_as(&ddl.user, ddl.password.expose_secret(), sql).await.unwrap();
        assert_eq!(server.owner("stray").await, ddl.user);
    }
    server.add_database(&target).await;

    run(&target, &prefix, store.as_ref(), Rotation::Alternating).await;
    if let Server::Postgres(_) = server {
        assert_eq!(server.owner("stray").await, Level::Ddl.user(&prefix), "the run gave the level what its second login made");
    }
    let (ro, ro_before) = stored(store.as_ref(), &prefix, Level::Ro).await;
    let ro_before = ro_before.expect("the store keeps the previous credentials");
    assert_ne!(ro.user, ro_before.user, "the store and its previous version name the two logins");
    let mut tables = vec!["by_alternate", "by_role", "items"];
    if let Server::Postgres(_) = server {
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
            Server::Postgres(cluster) => match cluster.client(&credentials.user, password, "late").await {
                Ok(client) => client.batch_execute("SELECT * FROM public.t").await.map_err(|e| e.to_string()),
                Err(error) => Err(error.to_string()),
            },
            Server::MariaDb(_) => server.run_as(&credentials.user, password, "SELECT * FROM late.t").await,
        };
        assert!(late.is_ok(), "{} reads the database added after a rotation: {late:?}", credentials.user);
    }
}

#[tokio::test]
async fn postgres_15_two_logins_hold_one_level() {
    let (server, target) = Server::postgres(PgVersion::V15).await;
    two_logins_hold_one_level(server, target).await;
}

#[tokio::test]
async fn postgres_17_two_logins_hold_one_level() {
    let (server, target) = Server::postgres(PgVersion::V17).await;
    two_logins_hold_one_level(server, target).await;
}

#[tokio::test]
async fn mariadb_two_logins_hold_one_level() {
    let (server, target) = Server::mariadb().await;
    two_logins_hold_one_level(server, target).await;
}
