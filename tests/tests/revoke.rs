//! Retiring roles (`mode: revoke`) with the master RDS gives, on PostgreSQL 15
//! and 17 and on MariaDB, servers of the test's own: no role and no stored
//! credentials are left, a table `_ddl` made survives with its rows, owned by
//! the master, a session open during the revoke is ended, and on MariaDB a
//! user that is the DEFINER of a view is named and kept, not silently orphaned.

use dbroles_core::engine::{Level, Target};
use dbroles_core::model::job::Phase;
use dbroles_core::model::request::Rotation;
use dbroles_core::provision::{provision_roles, revoke_roles, Endpoint, Options, Outcome};
use dbroles_core::secrets::{RoleCredentials, SecretStore};
use dbroles_tests::postgres::PgVersion;
use dbroles_tests::*;
use mysql_async::prelude::Queryable;
use secrecy::ExposeSecret;

/// Both logins of every level, as the alternating rotation leaves them after two runs.
async fn provision(target: &Target, prefix: &str, store: &dyn SecretStore) {
    let endpoint = Endpoint { host: "127.0.0.1".into(), port: target.port, db: "app".into(), engine: "any".into() };
    let options = Options { rotation: Rotation::Alternating, ..Options::default() };
    for _ in 0..2 {
        let outcome = provision_roles(target, &endpoint, prefix, store, &secret_ref(""), options).await.unwrap();
        assert_completed(&outcome);
    }
}

async fn revoke(target: &Target, prefix: &str, store: &dyn SecretStore) -> Outcome {
    revoke_roles(target, prefix, store, &secret_ref(""), &Level::ALL, false).await.expect("the revoke reaches the server")
}

async fn stored(store: &dyn SecretStore, prefix: &str, level: Level) -> Option<RoleCredentials> {
    store.read(&store.secret_id(&secret_ref(&level.user(prefix)))).await.unwrap()
}

async fn postgres_roles_are_retired(version: PgVersion) {
    let (server, target) = RdsLike::postgres(version).await;
    let RdsLike::Postgres(cluster) = &server else { unreachable!() };
    let (_dir, store) = own_store();
    let prefix = unique("v");
    provision(&target, &prefix, store.as_ref()).await;
    let ddl = stored(store.as_ref(), &prefix, Level::Ddl).await.unwrap();
    let sql = "CREATE TABLE made (id int); INSERT INTO made VALUES (1), (2)";
    server.run_as(&ddl.user, ddl.password.expose_secret(), sql).await.expect("ddl makes a table");
    let ro = stored(store.as_ref(), &prefix, Level::Ro).await.unwrap();
    let open = cluster.client(&ro.user, ro.password.expose_secret(), "app").await.expect("a consumer's session");

    let outcome = revoke(&target, &prefix, store.as_ref()).await;
    assert_completed(&outcome);
    let message = &outcome.results[0].message;
    assert!(message.contains(&format!("{prefix}_ro and {prefix}_ro_alt dropped, 1 session(s) ended")), "{message}");
    assert!(open.simple_query("SELECT 1").await.is_err(), "the open session was ended");
    let su = cluster.superuser("app").await;
    let pattern = format!("{prefix}\\_%");
    let left = su.query("SELECT rolname::text FROM pg_roles WHERE rolname LIKE $1", &[&pattern]).await.unwrap();
    assert!(left.is_empty(), "no role is left: {:?}", left.iter().map(|row| row.get::<_, String>(0)).collect::<Vec<_>>());
    let made = su.query_one("SELECT tableowner::text, (SELECT count(*) FROM made) FROM pg_tables WHERE tablename = 'made'", &[]);
    let made = made.await.expect("the table ddl made survives");
    assert_eq!((made.get::<_, String>(0), made.get::<_, i64>(1)), ("master".to_string(), 2));
    for level in Level::ALL {
        assert!(stored(store.as_ref(), &prefix, level).await.is_none(), "{level:?}: no stored credentials");
    }
    // A second revoke finds nothing to retire.
    let again = revoke(&target, &prefix, store.as_ref()).await;
    assert_completed(&again);
    assert!(again.results[0].message.contains("does not exist: nothing to retire"), "{}", again.results[0].message);
}

#[tokio::test]
async fn postgres_15_roles_are_retired_with_nothing_lost() {
    postgres_roles_are_retired(PgVersion::V15).await;
}

#[tokio::test]
async fn postgres_17_roles_are_retired_with_nothing_lost() {
    postgres_roles_are_retired(PgVersion::V17).await;
}

#[tokio::test]
async fn mariadb_roles_are_retired_and_a_definer_is_named_not_orphaned() {
    let (server, target) = RdsLike::mariadb().await;
    let RdsLike::MariaDb(mariadb) = &server else { unreachable!() };
    let (_dir, store) = own_store();
    let prefix = unique("v");
    provision(&target, &prefix, store.as_ref()).await;
    let ddl = stored(store.as_ref(), &prefix, Level::Ddl).await.unwrap();
    let sql = "CREATE TABLE made (id int); INSERT INTO made VALUES (1), (2); CREATE VIEW made_view AS SELECT id FROM made";
    server.run_as(&ddl.user, ddl.password.expose_secret(), sql).await.expect("ddl makes a table and a view");
    let ro = stored(store.as_ref(), &prefix, Level::Ro).await.unwrap();
    let mut open = mariadb.connect(&ro.user, ro.password.expose_secret()).await.expect("a consumer's session");

    let outcome = revoke(&target, &prefix, store.as_ref()).await;
    let by_level = |level: Level| outcome.results.iter().find(|r| r.user_role == level.user(&prefix)).unwrap();
    assert_eq!(by_level(Level::Ro).status, Phase::Completed, "{}", by_level(Level::Ro).message);
    assert!(by_level(Level::Ro).message.contains("1 session(s) ended"), "{}", by_level(Level::Ro).message);
    assert!(open.query_drop("SELECT 1").await.is_err(), "the open session was ended");
    let ddl_result = by_level(Level::Ddl);
    assert_eq!(ddl_result.status, Phase::Failed);
    assert!(ddl_result.message.contains(&format!("{} is the DEFINER of view app.made_view", ddl.user)), "{}", ddl_result.message);
    assert!(!server.logs_in(&ddl).await, "a definer that stays is locked");
    assert!(stored(store.as_ref(), &prefix, Level::Ddl).await.is_some(), "its credentials stay while it does");
    let mut root = mariadb.connect("root", "").await.unwrap();
    let view: Vec<i32> = root.query("SELECT id FROM app.made_view").await.expect("the view still works");
    assert_eq!(view, [1, 2]);

    // An administrator gives the view another definer; the next revoke retires the rest.
    root.query_drop("ALTER DEFINER = 'master'@'%' VIEW app.made_view AS SELECT id FROM app.made").await.unwrap();
    let outcome = revoke(&target, &prefix, store.as_ref()).await;
    assert_completed(&outcome);
    let pattern = format!("{}\\_%", prefix);
    let left: Vec<String> = root.exec("SELECT user FROM mysql.user WHERE user LIKE ?", (pattern,)).await.unwrap();
    assert!(left.is_empty(), "no user is left: {left:?}");
    let rows: Vec<i32> = root.query("SELECT id FROM app.made").await.unwrap();
    assert_eq!(rows, [1, 2], "the table ddl made survives");
    for level in Level::ALL {
        assert!(stored(store.as_ref(), &prefix, level).await.is_none(), "{level:?}: no stored credentials");
    }
}
