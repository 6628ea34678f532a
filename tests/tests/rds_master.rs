//! Roles provisioned with the master RDS really gives, and credentials that never
//! strand: a PostgreSQL master with `CREATEROLE CREATEDB` in `rds_superuser`
//! (no superuser) in a cluster where other roles own objects, the superuser
//! installed an extension and one database refuses the master; a MariaDB master
//! without SUPER or FILE. A role never becomes a path to more than its level, and
//! what a consumer reads logs in when grants fail (`cut_points.rs`: when the store fails).

use std::sync::Arc;

use dbroles_core::engine::{Family, Level, Target};
use dbroles_core::model::job::{Phase, RoleResult};
use dbroles_core::provision::{provision_roles, Endpoint, Options, Outcome};
use dbroles_core::secrets::database::DatabaseSecrets;
use dbroles_core::secrets::SecretStore;
use dbroles_tests::*;
use mysql_async::prelude::Queryable;
use secrecy::ExposeSecret;

fn store() -> (tempfile::TempDir, Arc<DatabaseSecrets>) {
    own_store()
}

async fn run(target: &Target, prefix: &str, store: &dyn SecretStore, adopt: bool) -> Outcome {
    let endpoint = Endpoint { host: "127.0.0.1".into(), port: target.port, db: String::new(), engine: "postgres".into() };
    provision_roles(target, &endpoint, prefix, store, &secret_ref(""), Options::adopting(adopt))
        .await
        .expect("the run reaches the server")
}

/// What a consumer reads from the store: the current password.
async fn consumer_password(store: &dyn SecretStore, user: &str) -> String {
    let credentials = store.read(&store.secret_id(&secret_ref(user))).await.unwrap().expect("stored credentials");
    credentials.password.expose_secret().to_string()
}

fn result<'a>(outcome: &'a Outcome, user: &str) -> &'a RoleResult {
    outcome.results.iter().find(|r| r.user_role == user).unwrap_or_else(|| panic!("no result for {user}"))
}

async fn denied(client: &tokio_postgres::Client, sql: &str) -> String {
    let error = client.batch_execute(sql).await.expect_err(sql);
    error.as_db_error().map(|e| e.message().to_string()).unwrap_or_default()
}

async fn superuser_says(cluster: &PgCluster, db: &str, sql: &str) -> bool {
    cluster.superuser(db).await.query_one(sql, &[]).await.unwrap().get(0)
}

#[tokio::test]
async fn postgres_roles_work_with_the_master_rds_gives() {
    let cluster = PgCluster::start();
    let password = cluster.rds_like().await;
    let target = target(Family::Postgres, cluster.port, "master", password);
    let (_dir, store) = store();
    let outcome = run(&target, "hoop", store.as_ref(), false).await;
    assert_completed(&outcome);
    let ro_message = &result(&outcome, "hoop_ro").message;
    assert!(ro_message.contains("database locked (the master may not connect to it)"), "{ro_message}");
    assert!(ro_message.contains("schema theirs in app"), "{ro_message}");
    assert!(ro_message.contains("relation(s) of other owners in app.public"), "{ro_message}");

    let ro = cluster.client("hoop_ro", &consumer_password(store.as_ref(), "hoop_ro").await, "app").await.expect("ro logs in");
    let ddl = cluster.client("hoop_ddl", &consumer_password(store.as_ref(), "hoop_ddl").await, "app").await.expect("ddl logs in");
    assert_eq!(ro.query_one("SELECT count(*) FROM public.items", &[]).await.unwrap().get::<_, i64>(0), 1);
    assert!(denied(&ro, "SELECT * FROM theirs.secret").await.contains("permission denied"));
    assert!(cluster.client("hoop_ro", &consumer_password(store.as_ref(), "hoop_ro").await, "locked").await.is_err());

    // No escalation: no extension function, no trigger on the master's table, no inherited master rights.
    for level in ["ro", "rw", "ddl"] {
        let sql = format!("SELECT has_function_privilege('hoop_{level}', 'dblink_connect_u(text)', 'EXECUTE')");
        assert!(!superuser_says(&cluster, "app", &sql).await, "hoop_{level} may run dblink_connect_u");
        for role in ["rds_superuser", "master"] {
            let sql = format!("SELECT pg_has_role('hoop_{level}', '{role}', 'MEMBER')");
            assert!(!superuser_says(&cluster, "app", &sql).await, "hoop_{level} is a member of {role}");
        }
    }
    ddl.batch_execute("CREATE FUNCTION public.evil() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$")
        .await
        .expect("ddl creates functions");
    let trigger = denied(&ddl, "CREATE TRIGGER evil BEFORE INSERT ON public.items FOR EACH ROW EXECUTE FUNCTION public.evil()");
    assert!(trigger.await.contains("permission denied"), "ddl put a trigger on the master's table");

    // Rotation with the same master: new passwords, the old ones dead, the grants kept.
    let mut old = Vec::new();
    for level in Level::ALL {
        old.push(consumer_password(store.as_ref(), &level.user("hoop")).await);
    }
    assert_completed(&run(&target, "hoop", store.as_ref(), false).await);
    for (level, old) in Level::ALL.into_iter().zip(old) {
        let user = level.user("hoop");
        assert!(cluster.client(&user, &old, "app").await.is_err(), "{user}'s old password still works");
        let client = cluster.client(&user, &consumer_password(store.as_ref(), &user).await, "app").await.expect("logs in");
        assert_eq!(client.query_one("SELECT count(*) FROM public.items", &[]).await.unwrap().get::<_, i64>(0), 1);
    }
    let rw = cluster.client("hoop_rw", &consumer_password(store.as_ref(), "hoop_rw").await, "app").await.expect("rw logs in");
    rw.batch_execute("INSERT INTO public.items (name) VALUES ('b')").await.expect("rw writes");
}

#[tokio::test]
async fn extension_functions_are_not_granted_even_by_a_superuser_master() {
    let cluster = PgCluster::start();
    cluster.superuser("postgres").await.batch_execute("CREATE EXTENSION dblink").await.unwrap();
    let target = target(Family::Postgres, cluster.port, "postgres", SUPERUSER_PASSWORD);
    let (_dir, store) = store();
    assert_completed(&run(&target, "hoop", store.as_ref(), false).await);
    let sql = "SELECT has_function_privilege('hoop_rw', 'dblink_connect_u(text)', 'EXECUTE')";
    assert!(!superuser_says(&cluster, "postgres", sql).await, "rw may run dblink_connect_u");
}

#[tokio::test]
async fn an_existing_role_dbroles_did_not_create_is_refused_unless_adopted() {
    let cluster = PgCluster::start();
    let password = cluster.rds_like().await;
    let su = cluster.superuser("postgres").await;
    su.batch_execute(
        "CREATE ROLE hoop_ro LOGIN CREATEDB VALID UNTIL '2999-01-01' PASSWORD 'Theirs-Pa55word' IN ROLE app_owner; \
         CREATE ROLE hoop_ddl LOGIN SUPERUSER PASSWORD 'Theirs-Pa55word'",
    )
    .await
    .unwrap();
    let target = target(Family::Postgres, cluster.port, "master", password);
    let (_dir, store) = store();

    let refused = run(&target, "hoop", store.as_ref(), false).await;
    let ro = result(&refused, "hoop_ro");
    assert_eq!(ro.status, Phase::Failed);
    assert!(ro.message.contains("hoop_ro exists and dbroles did not create it"), "{}", ro.message);
    assert_eq!(result(&refused, "hoop_rw").status, Phase::Completed);
    cluster.client("hoop_ro", "Theirs-Pa55word", "postgres").await.expect("a refused role is left as it is");

    let adopted = run(&target, "hoop", store.as_ref(), true).await;
    assert_eq!(result(&adopted, "hoop_ro").status, Phase::Completed, "{}", result(&adopted, "hoop_ro").message);
    let sql = "SELECT NOT rolcreatedb AND rolvaliduntil = 'infinity' AND NOT pg_has_role('hoop_ro', 'app_owner', 'MEMBER') \
               AND shobj_description(oid, 'pg_authid') = 'managed by dbroles' FROM pg_roles WHERE rolname = 'hoop_ro'";
    assert!(superuser_says(&cluster, "postgres", sql).await, "what ro's level does not allow was removed");
    assert!(cluster.client("hoop_ro", "Theirs-Pa55word", "postgres").await.is_err());
    cluster.client("hoop_ro", &consumer_password(store.as_ref(), "hoop_ro").await, "app").await.expect("ro logs in");
    // A superuser of the same name is beyond what an RDS master may change: refused, left as it was.
    let ddl = result(&adopted, "hoop_ddl");
    assert_eq!(ddl.status, Phase::Failed);
    assert!(ddl.message.contains("has SUPERUSER, which only a superuser may remove"), "{}", ddl.message);
    cluster.client("hoop_ddl", "Theirs-Pa55word", "postgres").await.expect("the superuser keeps its password");
}

#[tokio::test]
async fn mariadb_roles_work_with_a_master_without_super() {
    let prefix = unique("m");
    let _leaves = Leaves::new().prefix(&prefix);
    let master = format!("{prefix}_master");
    let password = rds_like_master(&master).await;
    let mut root = mariadb("root", "").await.unwrap();
    let app = format!("{prefix}_app");
    root.query_drop(format!(
        "CREATE DATABASE `{app}`; CREATE TABLE `{app}`.items (id int); INSERT INTO `{app}`.items VALUES (1); \
         CREATE USER '{prefix}_ro'@'%' IDENTIFIED BY 'Theirs-Pa55word'; GRANT SELECT ON *.* TO '{prefix}_ro'@'%'"
    ))
    .await
    .unwrap();
    let target = target(Family::MySql, 3306, &master, password);
    let (_dir, store) = store();

    let refused = run(&target, &prefix, store.as_ref(), false).await;
    assert_eq!(result(&refused, &format!("{prefix}_ro")).status, Phase::Failed);
    assert_eq!(result(&refused, &format!("{prefix}_rw")).status, Phase::Completed);
    mariadb(&format!("{prefix}_ro"), "Theirs-Pa55word").await.expect("a refused user is left as it is");

    assert_completed(&run(&target, &prefix, store.as_ref(), true).await);
    let grants: Vec<String> = root.query(format!("SHOW GRANTS FOR '{prefix}_ro'@'%'")).await.unwrap();
    assert!(!grants.iter().any(|g| g.contains("ON *.*") && !g.starts_with("GRANT USAGE")), "global privileges left: {grants:?}");
    for level in Level::ALL {
        let user = level.user(&prefix);
        let mut conn = mariadb(&user, &consumer_password(store.as_ref(), &user).await).await.expect("the role logs in");
        let count: Option<i64> = conn.query_first(format!("SELECT count(*) FROM `{app}`.items")).await.unwrap();
        assert_eq!(count, Some(1));
    }
    root.query_drop(format!("DROP DATABASE `{app}`; DROP USER '{master}'@'%'")).await.unwrap();
    for level in Level::ALL {
        root.query_drop(format!("DROP USER '{}'@'%'", level.user(&prefix))).await.unwrap();
    }
}

#[tokio::test]
async fn grants_that_fail_leave_a_password_that_logs_in_and_name_the_database() {
    let cluster = PgCluster::start();
    let su = cluster.superuser("postgres").await;
    su.batch_execute("CREATE DATABASE broken").await.unwrap();
    cluster
        .superuser("broken")
        .await
        .batch_execute(
            "CREATE FUNCTION no_grants() RETURNS event_trigger LANGUAGE plpgsql AS \
             $$ BEGIN IF tg_tag = 'GRANT' THEN RAISE EXCEPTION 'grants are refused here'; END IF; END $$; \
             CREATE EVENT TRIGGER no_grants ON ddl_command_start EXECUTE FUNCTION no_grants()",
        )
        .await
        .unwrap();
    let target = target(Family::Postgres, cluster.port, "postgres", SUPERUSER_PASSWORD);
    let (_dir, store) = store();
    let outcome = run(&target, "hoop", store.as_ref(), false).await;
    for level in Level::ALL {
        let user = level.user("hoop");
        let result = result(&outcome, &user);
        assert_eq!(result.status, Phase::Failed);
        assert!(result.message.contains("database broken: grants are refused here"), "{}", result.message);
        let consumer = consumer_password(store.as_ref(), &user).await;
        cluster.client(&user, &consumer, "postgres").await.expect("the stored password logs in");
    }
}
