//! Role provisioning on real PostgreSQL and MariaDB: logins, denials, rotation,
//! hostile names, TLS, failures. (Issue: role provisioning.)

use std::sync::Arc;
use std::time::Duration;

use dbroles_core::engine::{Family, Level, Target, TlsConfig, TlsMode};
use dbroles_core::provision::{provision_roles, Endpoint, Options, Outcome, ProvisionError};
use dbroles_core::secrets::database::DatabaseSecrets;
use dbroles_core::secrets::{SecretRef, SecretStore};
use dbroles_tests::*;
use mysql_async::prelude::Queryable;
use secrecy::{ExposeSecret, SecretString};

const HOSTILE_SCHEMAS: [&str; 4] = ["Mixed Case", "with\"quote", "données", "a;drop"];

fn pg_target(cluster: &PgCluster, tls: TlsConfig) -> Target {
    Target { tls, ..target(Family::Postgres, cluster.port, "master", RDS_MASTER_PASSWORD) }
}

fn mariadb_target() -> Target {
    target(Family::MySql, 3306, "root", "")
}

struct Secrets {
    _dir: tempfile::TempDir,
    store: Arc<DatabaseSecrets>,
}

fn secrets() -> Secrets {
    let (dir, store) = own_store();
    Secrets { _dir: dir, store }
}

async fn run(target: &Target, prefix: &str, store: &dyn SecretStore, engine: &str) -> Result<Outcome, ProvisionError> {
    let endpoint = Endpoint { host: target.host.clone(), port: target.port, db: String::new(), engine: engine.into() };
    provision_roles(target, &endpoint, prefix, store, &secret_ref(""), Options::adopting(false)).await
}

/// The password the store holds now for a role.
async fn password(store: &dyn SecretStore, user: &str) -> String {
    let id = store.secret_id(&secret_ref(user));
    store.read(&id).await.unwrap().expect("stored credentials").password.expose_secret().to_string()
}

/// The cluster as RDS makes it (its master no superuser), and hostile schema names
/// the master created in `app` beside `public.items`.
async fn pg_setup(cluster: &PgCluster) {
    cluster.rds_like().await;
    let app = cluster.client("master", RDS_MASTER_PASSWORD, "app").await.unwrap();
    let mut sql = String::new();
    for schema in HOSTILE_SCHEMAS {
        let s = dbroles_core::engine::postgres::quote_ident(schema);
        sql += &format!("CREATE SCHEMA {s}; CREATE TABLE {s}.t (id int); INSERT INTO {s}.t VALUES (1); CREATE VIEW {s}.v AS SELECT * FROM {s}.t;");
    }
    app.batch_execute(&sql).await.unwrap();
}

async fn denied(client: &tokio_postgres::Client, sql: &str) -> String {
    let error = client.batch_execute(sql).await.expect_err(sql);
    error.as_db_error().map(|e| e.message().to_string()).unwrap_or_default()
}

#[tokio::test]
async fn postgres_roles_have_least_privilege_rotate_and_cover_later_tables() {
    let cluster = PgCluster::start();
    pg_setup(&cluster).await;
    let secrets = secrets();
    let target = pg_target(&cluster, TlsConfig::disabled());
    let outcome = run(&target, "hoop", secrets.store.as_ref(), "postgres").await.unwrap();
    assert_completed(&outcome);
    assert!(outcome.report.databases.contains(&"app".to_string()));
    assert!(!outcome.report.databases.iter().any(|db| db.starts_with("template")));

    let ro_pw = password(secrets.store.as_ref(), "hoop_ro").await;
    let rw_pw = password(secrets.store.as_ref(), "hoop_rw").await;
    let ddl_pw = password(secrets.store.as_ref(), "hoop_ddl").await;
    let ro = cluster.client("hoop_ro", &ro_pw, "app").await.expect("ro logs in");
    let rw = cluster.client("hoop_rw", &rw_pw, "app").await.expect("rw logs in");
    let ddl = cluster.client("hoop_ddl", &ddl_pw, "app").await.expect("ddl logs in");

    // ro reads every schema, hostile names included, and writes nothing.
    assert_eq!(ro.query_one("SELECT count(*) FROM public.items", &[]).await.unwrap().get::<_, i64>(0), 1);
    for schema in HOSTILE_SCHEMAS {
        let s = dbroles_core::engine::postgres::quote_ident(schema);
        assert_eq!(ro.query_one(&format!("SELECT count(*) FROM {s}.v"), &[]).await.unwrap().get::<_, i64>(0), 1, "{schema}");
    }
    assert!(denied(&ro, "INSERT INTO public.items (name) VALUES ('x')").await.contains("permission denied"));

    // rw writes rows but creates nothing.
    rw.batch_execute("INSERT INTO public.items (name) VALUES ('b'); UPDATE public.items SET name = 'c' WHERE name = 'b'; DELETE FROM public.items WHERE name = 'c'")
        .await
        .expect("rw writes");
    assert!(denied(&rw, "CREATE TABLE public.nope (id int)").await.contains("permission denied"));
    assert!(denied(&rw, "TRUNCATE public.items").await.contains("permission denied"));

    // ddl creates tables; what it creates, ro reads and rw writes.
    ddl.batch_execute("CREATE TABLE public.by_ddl (id int); INSERT INTO public.by_ddl VALUES (7)").await.expect("ddl creates");
    assert_eq!(ro.query_one("SELECT id FROM public.by_ddl", &[]).await.unwrap().get::<_, i32>(0), 7);
    rw.batch_execute("INSERT INTO public.by_ddl VALUES (8)").await.expect("rw writes a ddl table");

    // A table the master user creates after the job is readable by ro.
    let admin = cluster.client("master", RDS_MASTER_PASSWORD, "app").await.unwrap();
    admin.batch_execute("CREATE TABLE \"Mixed Case\".later (id int); INSERT INTO \"Mixed Case\".later VALUES (3)").await.unwrap();
    assert_eq!(ro.query_one("SELECT id FROM \"Mixed Case\".later", &[]).await.unwrap().get::<_, i32>(0), 3);

    for client in [&ro, &rw, &ddl] {
        assert!(denied(client, "SELECT * FROM pg_authid").await.contains("permission denied"));
    }

    // The plaintext never reached the server: only the SCRAM verifier did.
    let log = cluster.log();
    assert!(log.contains("SCRAM-SHA-256$"), "the role statements are logged");
    for pw in [&ro_pw, &rw_pw, &ddl_pw] {
        assert!(!log.contains(pw.as_str()), "a password reached the server log");
    }

    // A second run rotates every password and keeps the grants.
    let again = run(&target, "hoop", secrets.store.as_ref(), "postgres").await.unwrap();
    assert_completed(&again);
    for (user, old) in [("hoop_ro", &ro_pw), ("hoop_rw", &rw_pw), ("hoop_ddl", &ddl_pw)] {
        let new = password(secrets.store.as_ref(), user).await;
        assert_ne!(&new, old);
        assert!(cluster.client(user, old, "app").await.is_err(), "{user}'s old password still works");
        cluster.client(user, &new, "app").await.unwrap_or_else(|e| panic!("{user}'s new password fails: {e}"));
    }
    let ro = cluster.client("hoop_ro", &password(secrets.store.as_ref(), "hoop_ro").await, "app").await.unwrap();
    assert_eq!(ro.query_one("SELECT count(*) FROM \"a;drop\".t", &[]).await.unwrap().get::<_, i64>(0), 1);
}

#[tokio::test]
async fn postgres_verify_full_trusts_the_configured_ca_and_refuses_another() {
    let cluster = PgCluster::start();
    cluster.rds_like().await;
    let secrets = secrets();
    let trusted = TlsConfig { mode: TlsMode::VerifyFull, ca_file: Some(cluster.ca_file.clone()) };
    let outcome = run(&pg_target(&cluster, trusted), "tls", secrets.store.as_ref(), "postgres").await.unwrap();
    assert_completed(&outcome);

    let required = TlsConfig { mode: TlsMode::Require, ca_file: None };
    assert_completed(&run(&pg_target(&cluster, required), "tls", secrets.store.as_ref(), "postgres").await.unwrap());

    let untrusted = TlsConfig { mode: TlsMode::VerifyFull, ca_file: Some(cluster.other_ca_file.clone()) };
    let error = run(&pg_target(&cluster, untrusted), "tls", secrets.store.as_ref(), "postgres")
        .await
        .err()
        .expect("an untrusted CA fails");
    let text = error.to_string();
    assert!(text.contains("127.0.0.1") && text.to_lowercase().contains("certificate"), "{text}");
}

#[tokio::test]
async fn postgres_verify_full_refuses_a_certificate_for_another_host_name() {
    let cluster = PgCluster::start_for(&["db.example.com"]);
    cluster.rds_like().await;
    let secrets = secrets();
    let trusted = TlsConfig { mode: TlsMode::VerifyFull, ca_file: Some(cluster.ca_file.clone()) };
    let error = run(&pg_target(&cluster, trusted), "tls", secrets.store.as_ref(), "postgres")
        .await
        .err()
        .expect("a certificate for another name fails");
    let text = error.to_string();
    assert!(text.contains("127.0.0.1") && text.contains("certificate not valid for name"), "{text}");
}

/// A MariaDB with a certificate for `names`, an RDS-like master in it, and that master's target.
async fn mariadb_with_tls(names: &[&str]) -> (MariaDbServer, Target) {
    let server = MariaDbServer::start_for(names).await;
    let mut root = server.connect("root", "").await.unwrap();
    root.query_drop(
        "CREATE USER 'master'@'%' IDENTIFIED BY 'Rds-Master-Pa55word' REQUIRE SSL; \
         GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, RELOAD, PROCESS, REFERENCES, INDEX, ALTER, SHOW DATABASES, \
         CREATE TEMPORARY TABLES, LOCK TABLES, EXECUTE, CREATE VIEW, SHOW VIEW, CREATE ROUTINE, ALTER ROUTINE, CREATE USER, \
         EVENT, TRIGGER ON *.* TO 'master'@'%' WITH GRANT OPTION; CREATE DATABASE app",
    )
    .await
    .unwrap();
    let target = target(Family::MySql, server.port, "master", "Rds-Master-Pa55word");
    (server, target)
}

#[tokio::test]
async fn mariadb_verify_full_trusts_the_configured_ca_and_refuses_another() {
    let (server, target) = mariadb_with_tls(&["127.0.0.1"]).await;
    let secrets = secrets();
    let trusted = TlsConfig { mode: TlsMode::VerifyFull, ca_file: Some(server.ca_file.clone()) };
    let outcome = run(&Target { tls: trusted, ..target.clone() }, "tls", secrets.store.as_ref(), "mariadb").await.unwrap();
    assert_completed(&outcome);
    // The master may only connect over TLS, so dbroles did; the role logs in with what was stored.
    assert!(server.connect("master", "Rds-Master-Pa55word").await.is_err(), "REQUIRE SSL refuses a plain connection");
    let ro = password(secrets.store.as_ref(), "tls_ro").await;
    server.connect("tls_ro", &ro).await.expect("the role logs in");

    let required = TlsConfig { mode: TlsMode::Require, ca_file: None };
    assert_completed(&run(&Target { tls: required, ..target.clone() }, "tls", secrets.store.as_ref(), "mariadb").await.unwrap());

    let error = refused(&target, &server.other_ca_file).await;
    assert!(error.contains("127.0.0.1") && error.to_lowercase().contains("certificate"), "{error}");
}

#[tokio::test]
async fn mariadb_verify_full_refuses_a_certificate_for_another_host_name() {
    let (server, target) = mariadb_with_tls(&["db.example.com"]).await;
    let error = refused(&target, &server.ca_file).await;
    assert!(error.contains("127.0.0.1") && error.to_lowercase().contains("not valid for name"), "{error}");
}

/// Why provisioning `target` with verify-full trusting `ca_file` failed.
async fn refused(target: &Target, ca_file: &std::path::Path) -> String {
    let tls = TlsConfig { mode: TlsMode::VerifyFull, ca_file: Some(ca_file.to_path_buf()) };
    let outcome = run(&Target { tls, ..target.clone() }, "tls", secrets().store.as_ref(), "mariadb").await;
    outcome.err().expect("verify-full refuses the server").to_string()
}

#[tokio::test]
async fn wrong_master_password_fails_fast_naming_the_host_not_the_password() {
    let cluster = PgCluster::start();
    cluster.rds_like().await;
    let secrets = secrets();
    let mut target = pg_target(&cluster, TlsConfig::disabled());
    target.master_password = SecretString::from("wrong-Secret-123");
    let started = std::time::Instant::now();
    let error = run(&target, "bad", secrets.store.as_ref(), "postgres").await.err().expect("a wrong password fails").to_string();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(error.contains(&format!("127.0.0.1:{}", cluster.port)), "{error}");
    assert!(error.contains("password authentication failed"), "{error}");
    assert!(!error.contains("wrong-Secret-123"), "{error}");
}

#[tokio::test]
async fn unreachable_host_fails_within_the_connect_timeout() {
    let secrets = secrets();
    let mut target = mariadb_target();
    target.port = free_port();
    target.connect_timeout = Duration::from_secs(2);
    let error = run(&target, "gone", secrets.store.as_ref(), "mariadb").await.err().expect("nothing listens").to_string();
    assert!(error.contains(&format!("127.0.0.1:{}", target.port)), "{error}");
}

#[tokio::test]
async fn a_secret_store_failure_changes_nothing_in_the_database() {
    struct Down;
    #[async_trait::async_trait]
    impl SecretStore for Down {
        fn provider(&self) -> dbroles_core::model::job::SecretsProvider {
            dbroles_core::model::job::SecretsProvider::AwsSecretsManager
        }
        fn secret_id(&self, secret: &SecretRef) -> String {
            secret.user.clone()
        }
        async fn stage(
            &self,
            _: &SecretRef,
            _: &dbroles_core::secrets::RoleCredentials,
        ) -> Result<dbroles_core::secrets::Staged, dbroles_core::secrets::SecretError> {
            Err(dbroles_core::secrets::SecretError::Failed("connection refused".into()))
        }
        async fn confirm(&self, _: &dbroles_core::secrets::Staged) -> Result<(), dbroles_core::secrets::SecretError> {
            unreachable!("nothing is staged")
        }
        async fn delete(&self, _: &str) -> Result<(), dbroles_core::secrets::SecretError> {
            unreachable!("nothing is retired")
        }
        async fn read(
            &self,
            _: &str,
        ) -> Result<Option<dbroles_core::secrets::RoleCredentials>, dbroles_core::secrets::SecretError> {
            Ok(None)
        }
    }
    let prefix = unique("t");
    let error = run(&mariadb_target(), &prefix, &Down, "mariadb").await.err().expect("the store is down");
    assert!(matches!(error, ProvisionError::SecretStore(_)), "{error}");
    let mut root = mariadb("root", "").await.unwrap();
    let users: Vec<String> = root.exec("SELECT user FROM mysql.user WHERE user LIKE ?", (format!("{prefix}%"),)).await.unwrap();
    assert!(users.is_empty(), "users were created: {users:?}");
}

async fn my_denied(conn: &mut mysql_async::Conn, sql: &str) -> String {
    conn.query_drop(sql).await.expect_err(sql).to_string()
}

#[tokio::test]
async fn mariadb_roles_have_least_privilege_and_rotate_without_dropping_users() {
    let prefix = unique("t");
    let _leaves = Leaves::new().prefix(&prefix);
    let app = format!("{prefix}_app");
    let hostile = format!("{prefix} a;drop`x");
    let mut root = mariadb("root", "").await.unwrap();
    let q = dbroles_core::engine::mysql::quote_ident;
    root.query_drop(format!(
        "CREATE DATABASE {a}; CREATE TABLE {a}.items (id int); INSERT INTO {a}.items VALUES (1); \
         CREATE DATABASE {h}; CREATE TABLE {h}.t (id int); INSERT INTO {h}.t VALUES (2)",
        a = q(&app),
        h = q(&hostile)
    ))
    .await
    .unwrap();

    let secrets = secrets();
    let master = format!("{prefix}_master");
    let target = target(Family::MySql, 3306, &master, rds_like_master(&master).await);
    let outcome = run(&target, &prefix, secrets.store.as_ref(), "mariadb").await.unwrap();
    assert_completed(&outcome);
    assert!(!outcome
        .report
        .databases
        .iter()
        .any(|db| ["mysql", "sys", "performance_schema", "information_schema"].contains(&db.as_str())));

    let user = |level: Level| level.user(&prefix);
    let ro_pw = password(secrets.store.as_ref(), &user(Level::Ro)).await;
    let mut ro = mariadb(&user(Level::Ro), &ro_pw).await.expect("ro logs in");
    let mut rw = mariadb(&user(Level::Rw), &password(secrets.store.as_ref(), &user(Level::Rw)).await).await.expect("rw logs in");
    let mut ddl =
        mariadb(&user(Level::Ddl), &password(secrets.store.as_ref(), &user(Level::Ddl)).await).await.expect("ddl logs in");

    let count: Option<i64> = ro.query_first(format!("SELECT count(*) FROM {}.items", q(&app))).await.unwrap();
    assert_eq!(count, Some(1));
    let hostile_id: Option<i32> = ro.query_first(format!("SELECT id FROM {}.t", q(&hostile))).await.unwrap();
    assert_eq!(hostile_id, Some(2));
    assert!(my_denied(&mut ro, &format!("INSERT INTO {}.items VALUES (9)", q(&app))).await.contains("denied"));

    rw.query_drop(format!(
        "INSERT INTO {a}.items VALUES (5); UPDATE {a}.items SET id = 6 WHERE id = 5; DELETE FROM {a}.items WHERE id = 6",
        a = q(&app)
    ))
    .await
    .expect("rw writes");
    assert!(my_denied(&mut rw, &format!("CREATE TABLE {}.nope (id int)", q(&app))).await.contains("denied"));

    ddl.query_drop(format!("CREATE TABLE {}.by_ddl (id int)", q(&app))).await.expect("ddl creates");
    for conn in [&mut ro, &mut rw, &mut ddl] {
        assert!(my_denied(conn, "SELECT * FROM mysql.user").await.contains("denied"));
    }

    // Rotation: the open session survives, the old password stops working.
    let again = run(&target, &prefix, secrets.store.as_ref(), "mariadb").await.unwrap();
    assert_completed(&again);
    let still: Option<i64> = ro.query_first(format!("SELECT count(*) FROM {}.items", q(&app))).await.unwrap();
    assert_eq!(still, Some(1), "an open session survives the rotation");
    assert!(mariadb(&user(Level::Ro), &ro_pw).await.is_err(), "the old password still works");
    let new_pw = password(secrets.store.as_ref(), &user(Level::Ro)).await;
    assert_ne!(new_pw, ro_pw);
    let mut ro = mariadb(&user(Level::Ro), &new_pw).await.expect("the new password works");
    assert!(my_denied(&mut ro, &format!("INSERT INTO {}.items VALUES (9)", q(&app))).await.contains("denied"), "grants kept");

    root.query_drop(format!("DROP DATABASE {}; DROP DATABASE {}", q(&app), q(&hostile))).await.unwrap();
    for level in Level::ALL {
        root.query_drop(format!("DROP USER '{}'@'%'", user(level))).await.unwrap();
    }
    root.query_drop(format!("DROP USER '{master}'@'%'")).await.unwrap();
}

#[test]
fn a_prefix_too_long_for_mysql_is_rejected_but_fits_postgres() {
    use dbroles_core::engine::validate_prefix;
    let prefix = "a".repeat(30);
    let error = validate_prefix(&prefix, "mysql", false).unwrap_err();
    assert!(error.0.contains("32 characters"), "{}", error.0);
    assert!(validate_prefix(&prefix, "postgres", false).is_ok());
    assert!(validate_prefix("hoop", "oracle-ee", false).unwrap_err().0.contains("postgres, aurora-postgresql"));
}

#[test]
fn the_alternating_rotation_checks_the_longer_second_login() {
    use dbroles_core::engine::validate_prefix;
    // `<prefix>_ddl` is 28 characters, `<prefix>_ddl_alt` 32: both fit MySQL.
    let fits = "a".repeat(24);
    assert!(validate_prefix(&fits, "mysql", true).is_ok());
    let longer = "a".repeat(25);
    assert!(validate_prefix(&longer, "mysql", false).is_ok(), "only the second login is too long");
    let error = validate_prefix(&longer, "mysql", true).unwrap_err();
    assert!(error.0.contains(&format!("{longer}_ddl_alt")) && error.0.contains("32 characters"), "{}", error.0);
    let error = validate_prefix(&"p".repeat(56), "postgres", true).unwrap_err();
    assert!(error.0.contains("63 characters"), "{}", error.0);
    assert!(validate_prefix(&"p".repeat(55), "postgres", true).is_ok());
}
