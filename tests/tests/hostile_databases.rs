//! Databases are untrusted input. Their users and owners plant functions,
//! operators, casts and schemas where the master's catalog queries would find
//! them, set `search_path` on the database and on the master's role, and name
//! objects with quotes, backticks, semicolons and dollar quotes. With an
//! RDS-like master (no superuser), on PostgreSQL 15 and 17 and on MariaDB, no
//! trap ever runs as the master, and the roles are still provisioned.
//!
//! Every trap logs who ran it. Each test first springs the traps itself, as the
//! master in a session without dbroles' pinned options, to prove they are live.

use dbroles_core::engine::{Family, Level};
use dbroles_core::provision::{provision_roles, Endpoint, Options, Outcome};
use dbroles_core::secrets::SecretStore;
use dbroles_tests::postgres::PgVersion;
use dbroles_tests::*;
use mysql_async::prelude::Queryable;
use secrecy::ExposeSecret;

const MALLORY_PASSWORD: &str = "Mallory-Pa55word";

/// A schema's trap log (INSERT for everyone) and a function that records who called it as what.
fn trap_log(schema: &str) -> String {
    format!(
        "CREATE TABLE {schema}.trapped (who text, what text); GRANT INSERT ON {schema}.trapped TO PUBLIC; \
         CREATE FUNCTION {schema}.spring(what text) RETURNS void LANGUAGE sql AS \
         $$ INSERT INTO {schema}.trapped VALUES (CURRENT_USER::pg_catalog.text, what) $$"
    )
}

/// Look-alikes of what a catalog query calls, in `schema`: each springs the trap, then answers as the real one.
fn look_alikes(schema: &str) -> String {
    let wrap = |name: &str, args: &str, call: &str| {
        format!(
            "CREATE FUNCTION {schema}.{name}({args}) RETURNS boolean LANGUAGE plpgsql AS \
             $f$ BEGIN PERFORM {schema}.spring('{schema}.{name}'); RETURN {call}; END $f$"
        )
    };
    [
        wrap("has_schema_privilege", "oid, text", "pg_catalog.has_schema_privilege($1, $2)"),
        wrap("has_database_privilege", "oid, text", "pg_catalog.has_database_privilege($1, $2)"),
        wrap("has_database_privilege", "text, oid, text", "pg_catalog.has_database_privilege($1, $2, $3)"),
        wrap("pg_has_role", "oid, text", "pg_catalog.pg_has_role($1, $2)"),
        wrap("has_function_privilege", "oid, text", "pg_catalog.has_function_privilege($1, $2)"),
        wrap("has_function_privilege", "text, oid, text", "pg_catalog.has_function_privilege($1, $2, $3)"),
        wrap("trap_eq", "oid, oid", "$1 OPERATOR(pg_catalog.=) $2"),
        wrap("trap_not_like", "name, name", "NOT ($1::pg_catalog.text OPERATOR(pg_catalog.~~) $2::pg_catalog.text)"),
        wrap("trap_like", "name, name", "$1::pg_catalog.text OPERATOR(pg_catalog.~~) $2::pg_catalog.text"),
        format!("CREATE OPERATOR {schema}.= (LEFTARG = oid, RIGHTARG = oid, FUNCTION = {schema}.trap_eq)"),
        format!("CREATE OPERATOR {schema}.!~~ (LEFTARG = name, RIGHTARG = name, FUNCTION = {schema}.trap_not_like)"),
        format!("CREATE OPERATOR {schema}.~~ (LEFTARG = name, RIGHTARG = name, FUNCTION = {schema}.trap_like)"),
        // A type named like the catalog's, and a cast to it from regclass.
        format!("CREATE TYPE {schema}.text AS (t pg_catalog.text)"),
        format!(
            "CREATE FUNCTION {schema}.trap_cast(pg_catalog.regclass) RETURNS {schema}.text LANGUAGE plpgsql AS \
             $f$ BEGIN PERFORM {schema}.spring('{schema}.cast'); RETURN ROW($1::pg_catalog.text); END $f$"
        ),
        format!("CREATE CAST (pg_catalog.regclass AS {schema}.text) WITH FUNCTION {schema}.trap_cast(pg_catalog.regclass)"),
    ]
    .join(";\n")
}

/// Names that break naive quoting, made by the master in `app` (so it may grant on them).
const ODD_SCHEMA: &str = r#""we""ird;$$ sch`ema""#;
const ODD_TABLE: &str = r#""ta`ble'; DROP ROLE master; --""#;
const DOLLAR_TABLE: &str = r#""$tag$ünïcödé $$ 表""#;

/// An RDS-like cluster with traps everywhere a catalog query could meet one:
/// - `mallory`, an ordinary login, owns look-alike operators and a cast in
///   `app`'s `public` (where it was granted CREATE);
/// - `app_owner` puts a schema of look-alikes before `pg_catalog` on its database `others`;
/// - the master's own role carries a `search_path` that puts mallory's schema `lure` first in `app`.
async fn trapped_cluster(version: PgVersion) -> (PgCluster, &'static str) {
    let cluster = PgCluster::start_version(version, &["127.0.0.1", "localhost"]);
    let password = cluster.rds_like().await;
    let su_app = cluster.superuser("app").await;
    su_app
        .batch_execute(&format!(
            "CREATE ROLE mallory LOGIN PASSWORD '{MALLORY_PASSWORD}'; GRANT CREATE ON SCHEMA public TO mallory; \
             CREATE SCHEMA lure AUTHORIZATION mallory; GRANT USAGE ON SCHEMA lure TO PUBLIC; \
             CREATE SCHEMA log; GRANT USAGE ON SCHEMA log TO PUBLIC; {}",
            trap_log("log")
        ))
        .await
        .unwrap();
    let mallory = cluster.client("mallory", MALLORY_PASSWORD, "app").await.expect("mallory logs in");
    for schema in ["public", "lure"] {
        let plant = look_alikes(schema).replace(&format!("{schema}.spring("), "log.spring(");
        mallory.batch_execute(&plant).await.unwrap_or_else(|e| panic!("mallory plants in {schema}: {e:?}"));
    }
    // A role-level path for the master, as anyone who may alter it could set.
    // (In `app` only: a role's setting would override `others`' own.)
    let role_path = "ALTER ROLE master IN DATABASE app SET search_path = lure, pg_catalog";
    cluster.superuser("postgres").await.batch_execute(role_path).await.unwrap();
    let su_others = cluster.superuser("others").await;
    su_others
        .batch_execute(&format!(
            "SET ROLE app_owner; \
             CREATE SCHEMA evil; GRANT USAGE ON SCHEMA evil TO PUBLIC; {}; {}; RESET ROLE; \
             ALTER DATABASE others SET search_path = evil, pg_catalog",
            trap_log("evil"),
            look_alikes("evil")
        ))
        .await
        .unwrap();
    let master = cluster.client("master", password, "app").await.unwrap();
    master
        .batch_execute(&format!(
            "CREATE SCHEMA {ODD_SCHEMA}; CREATE TABLE {ODD_SCHEMA}.{ODD_TABLE} (id int); \
             INSERT INTO {ODD_SCHEMA}.{ODD_TABLE} VALUES (7); CREATE TABLE public.{DOLLAR_TABLE} (id int); \
             INSERT INTO public.{DOLLAR_TABLE} VALUES (8)"
        ))
        .await
        .unwrap();
    (cluster, password)
}

/// Who ran a trap, in both logs.
async fn sprung(cluster: &PgCluster) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for (db, table) in [("app", "log.trapped"), ("others", "evil.trapped")] {
        let rows = cluster.superuser(db).await.query(&format!("SELECT who, what FROM {table}"), &[]).await.unwrap();
        found.extend(rows.iter().map(|row| (row.get::<_, String>(0), format!("{db}: {}", row.get::<_, String>(1)))));
    }
    found
}

async fn clear_logs(cluster: &PgCluster) {
    cluster.superuser("app").await.batch_execute("TRUNCATE log.trapped").await.unwrap();
    cluster.superuser("others").await.batch_execute("TRUNCATE evil.trapped").await.unwrap();
}

/// The traps are live: the master's own queries, in a session without dbroles'
/// pinned path, run mallory's and the owner's code.
async fn assert_traps_spring(cluster: &PgCluster, password: &str) {
    let catalog_query = "SELECT n.nspname FROM pg_namespace n WHERE has_schema_privilege(n.oid, 'USAGE') \
                         AND n.nspname NOT LIKE 'pg\\_temp\\_%' AND pg_has_role(n.nspowner, 'USAGE')";
    for db in ["app", "others"] {
        let naive = cluster.client("master", password, db).await.unwrap();
        naive.query(catalog_query, &[]).await.unwrap_or_else(|e| panic!("{db}: {e:?}"));
        naive.query("SELECT c.oid::regclass::text FROM pg_class c LIMIT 1", &[]).await.unwrap();
        // The default path: `public` after the implicit `pg_catalog`.
        naive.batch_execute("SET search_path = \"$user\", public").await.unwrap();
        naive.query(catalog_query, &[]).await.unwrap();
    }
    let sprung = sprung(cluster).await;
    let live = [
        "app: lure.has_schema_privilege",
        "app: lure.trap_not_like",
        "app: lure.cast",
        "app: public.trap_not_like",
        "others: evil.has_schema_privilege",
        "others: evil.pg_has_role",
        "others: evil.cast",
    ];
    for what in live {
        assert!(sprung.contains(&("master".to_string(), what.to_string())), "the trap {what} is not live: {sprung:?}");
    }
    clear_logs(cluster).await;
}

async fn provision(cluster: &PgCluster, password: &str, store: &dyn SecretStore) -> Outcome {
    let target = target(Family::Postgres, cluster.port, "master", password);
    let endpoint = Endpoint { host: "127.0.0.1".into(), port: cluster.port, db: String::new(), engine: "postgres".into() };
    provision_roles(&target, &endpoint, "hoop", store, &secret_ref(""), Options::adopting(false)).await.expect("a run")
}

async fn password_of(store: &dyn SecretStore, user: &str) -> String {
    let credentials = store.read(&store.secret_id(&secret_ref(user))).await.unwrap().expect("stored credentials");
    credentials.password.expose_secret().to_string()
}

async fn no_trap_runs_as_the_master(version: PgVersion) {
    let (cluster, password) = trapped_cluster(version).await;
    assert_traps_spring(&cluster, password).await;

    let (_dir, store) = own_store();
    assert_completed(&provision(&cluster, password, store.as_ref()).await);
    let mut first = Vec::new();
    for level in Level::ALL {
        let password = password_of(store.as_ref(), &level.user("hoop")).await;
        cluster.client(&level.user("hoop"), &password, "app").await.expect("each role logs in after the first run");
        first.push(password);
    }
    // A rotation surveys and grants again.
    assert_completed(&provision(&cluster, password, store.as_ref()).await);
    assert_eq!(sprung(&cluster).await, Vec::<(String, String)>::new(), "traps ran during the runs");
    for (level, old) in Level::ALL.iter().zip(&first) {
        assert!(cluster.client(&level.user("hoop"), old, "app").await.is_err(), "the rotation changed {level:?}'s password");
    }

    // The roles work, on the odd names too, and mallory's look-alikes lent them nothing.
    let ro = cluster.client("hoop_ro", &password_of(store.as_ref(), "hoop_ro").await, "app").await.expect("ro logs in");
    let odd = format!("SELECT id FROM {ODD_SCHEMA}.{ODD_TABLE}");
    assert_eq!(ro.query_one(&odd, &[]).await.unwrap().get::<_, i32>(0), 7);
    let dollar = format!("SELECT id FROM public.{DOLLAR_TABLE}");
    assert_eq!(ro.query_one(&dollar, &[]).await.unwrap().get::<_, i32>(0), 8);
    for level in Level::ALL {
        let user = level.user("hoop");
        cluster.client(&user, &password_of(store.as_ref(), &user).await, "others").await.expect("logs in to others");
    }
    let master_alive: bool = cluster
        .superuser("postgres")
        .await
        .query_one("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'master')", &[])
        .await
        .unwrap()
        .get(0);
    assert!(master_alive, "a name was run as SQL");
}

#[tokio::test]
async fn no_trap_runs_as_the_master_on_postgres_15() {
    no_trap_runs_as_the_master(PgVersion::V15).await;
}

#[tokio::test]
async fn no_trap_runs_as_the_master_on_postgres_17() {
    no_trap_runs_as_the_master(PgVersion::V17).await;
}

/// `rw` and `ddl` get EXECUTE on functions that run as their caller, never on a
/// SECURITY DEFINER one, which would lend them its owner's (the master's) rights.
async fn security_definer_functions_are_not_granted(version: PgVersion) {
    let cluster = PgCluster::start_version(version, &["127.0.0.1"]);
    let password = cluster.rds_like().await;
    let master = cluster.client("master", password, "app").await.unwrap();
    master
        .batch_execute(
            "CREATE FUNCTION public.as_caller() RETURNS int LANGUAGE sql AS 'SELECT 1'; \
             CREATE FUNCTION public.as_owner() RETURNS int LANGUAGE sql SECURITY DEFINER AS 'SELECT 2'; \
             REVOKE EXECUTE ON FUNCTION public.as_caller(), public.as_owner() FROM PUBLIC",
        )
        .await
        .unwrap();
    let (_dir, store) = own_store();
    assert_completed(&provision(&cluster, password, store.as_ref()).await);
    for level in [Level::Rw, Level::Ddl] {
        let user = level.user("hoop");
        let client = cluster.client(&user, &password_of(store.as_ref(), &user).await, "app").await.unwrap();
        assert_eq!(client.query_one("SELECT public.as_caller()", &[]).await.unwrap().get::<_, i32>(0), 1);
        let denied = client.query_one("SELECT public.as_owner()", &[]).await.expect_err("a definer's function");
        assert!(denied.as_db_error().unwrap().message().contains("permission denied"), "{user}: {denied:?}");
    }
}

#[tokio::test]
async fn security_definer_functions_are_not_granted_on_postgres_15() {
    security_definer_functions_are_not_granted(PgVersion::V15).await;
}

#[tokio::test]
async fn security_definer_functions_are_not_granted_on_postgres_17() {
    security_definer_functions_are_not_granted(PgVersion::V17).await;
}

/// MariaDB: a server whose global `sql_mode` reads quotes and backslashes
/// otherwise, databases named with backticks, quotes and semicolons, and routines
/// of both securities. `rw` executes the INVOKER routine, never the DEFINER one.
#[tokio::test]
async fn mariadb_names_modes_and_definer_routines_lend_nothing() {
    let server = MariaDbServer::start_for(&["127.0.0.1"]).await;
    let mut root = server.connect("root", "").await.unwrap();
    let password = "Rds-Master-Pa55word";
    root.query_drop(format!(
        "CREATE USER 'master'@'%' IDENTIFIED BY '{password}'; \
         GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, RELOAD, PROCESS, REFERENCES, INDEX, ALTER, SHOW DATABASES, \
         CREATE TEMPORARY TABLES, LOCK TABLES, EXECUTE, CREATE VIEW, SHOW VIEW, CREATE ROUTINE, ALTER ROUTINE, CREATE USER, \
         EVENT, TRIGGER ON *.* TO 'master'@'%' WITH GRANT OPTION; \
         CREATE DATABASE my_db; CREATE TABLE my_db.t (id int); INSERT INTO my_db.t VALUES (1); \
         CREATE DATABASE `we``ird';db`; CREATE TABLE `we``ird';db`.`ta``ble; --` (id int); \
         INSERT INTO `we``ird';db`.`ta``ble; --` VALUES (2); \
         CREATE FUNCTION my_db.as_caller() RETURNS int SQL SECURITY INVOKER RETURN 1; \
         CREATE FUNCTION my_db.as_owner() RETURNS int SQL SECURITY DEFINER RETURN 2; \
         SET GLOBAL sql_mode = 'ANSI_QUOTES,NO_BACKSLASH_ESCAPES,PIPES_AS_CONCAT'"
    ))
    .await
    .unwrap();
    let target = target(Family::MySql, server.port, "master", password);
    let (_dir, store) = own_store();
    let endpoint = Endpoint { host: "127.0.0.1".into(), port: server.port, db: String::new(), engine: "mariadb".into() };
    for _ in 0..2 {
        let outcome =
            provision_roles(&target, &endpoint, "hoop", store.as_ref(), &secret_ref(""), Options::adopting(false)).await.unwrap();
        assert_completed(&outcome);
    }
    let mut ro = server.connect("hoop_ro", &password_of(store.as_ref(), "hoop_ro").await).await.expect("ro logs in");
    let odd: Option<i32> = ro.query_first("SELECT id FROM `we``ird';db`.`ta``ble; --`").await.unwrap();
    assert_eq!(odd, Some(2));
    // `my_db` was granted as a name, not as the pattern my_db (which would match a later myXdb).
    root.query_drop("CREATE DATABASE myXdb; CREATE TABLE myXdb.t (id int)").await.unwrap();
    assert!(ro.query_drop("SELECT * FROM myXdb.t").await.is_err(), "ro reads myXdb through a wildcard");
    let mut rw = server.connect("hoop_rw", &password_of(store.as_ref(), "hoop_rw").await).await.expect("rw logs in");
    let caller: Option<i32> = rw.query_first("SELECT my_db.as_caller()").await.unwrap();
    assert_eq!(caller, Some(1));
    let definer = rw.query_drop("SELECT my_db.as_owner()").await.expect_err("a definer's routine");
    assert!(definer.to_string().contains("denied"), "{definer}");
    let grants: Vec<String> = root.query("SHOW GRANTS FOR 'hoop_rw'@'%'").await.unwrap();
    assert!(!grants.iter().any(|g| g.contains("EXECUTE ON `")), "a database-wide EXECUTE: {grants:?}");
}

/// The same traps under a deployment on moto: the job's steps, carried out by
/// the provisioning definition over the AWS adapters (RDS, Secrets Manager,
/// DynamoDB), spring none, and the job completes.
#[tokio::test(flavor = "multi_thread")]
async fn on_moto_a_job_on_a_trapped_database_springs_nothing() {
    use dbroles_core::config::{Config, CredentialsStore};
    use dbroles_core::deps::App;
    use dbroles_core::executor::Executor;
    use dbroles_core::executor::Local;
    use dbroles_core::lifecycle::jobs;
    use dbroles_core::model::job::Phase;
    use dbroles_core::workflow::Workflow;

    let (cluster, password) = trapped_cluster(PgVersion::V17).await;
    let aws = aws_config(&moto_endpoint()).await;
    let instance = moto_instance(&aws, &unique("trapped-"), "postgres", ("master", password), &[]).await;
    let config = Config {
        endpoint_overrides: std::collections::HashMap::from([(instance.host.clone(), format!("127.0.0.1:{}", cluster.port))]),
        settings: settings("hoop"),
        credentials: CredentialsStore::SecretsManager,
        ..Config::new(unique("jobs-"))
    };
    create_table(&aws, &config.table).await;
    let deps = dbroles_core::wiring::aws(&config, &aws).await.unwrap();
    let local = std::sync::Arc::new(Local::new(Executor::provision(0.01), deps.clone()));
    let app = App::new(&deps, local.clone());
    let request = serde_json::from_value(serde_json::json!({
        "agent_id": "a1b2c3d4-e5f6-7890-abcd-ef1234567890",
        "aws": {"instance_arn": instance.arn},
        "connection_prefix_name": "trapped-",
        "job_steps": ["create-connections"]
    }))
    .unwrap();
    let id = jobs::start(&app, ORG, "alice", request, None).await.unwrap();
    local.wait(&local.execution_id(&id)).await;
    let job = jobs::find(app.deps.jobs.as_ref(), ORG, &id).await.unwrap().job;
    assert_eq!(job.phase(), Phase::Completed, "{:?}", job.status);
    assert_eq!(sprung(&cluster).await, Vec::<(String, String)>::new(), "traps ran during the job");
}
