//! How runs use the server: never more connections open at once than the job's
//! bound (`max_db_connections`), the login checks' included, in every mode and
//! also at a bound of one; and a failure in one database leaves the other
//! databases' grants, the other roles' grants there, and the promotion of every
//! password before any grant, as they were. Servers of the tests' own, with the
//! master RDS gives: PostgreSQL 15 and 17, and MariaDB.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use dbroles_core::engine::{Level, Target};
use dbroles_core::model::job::Phase;
use dbroles_core::model::request::Mode;
use dbroles_core::provision::{plan_roles, provision_roles, revoke_roles, Endpoint, Options, Outcome};
use dbroles_core::secrets::SecretStore;
use dbroles_tests::postgres::PgVersion;
use dbroles_tests::*;
use mysql_async::prelude::Queryable;
use secrecy::ExposeSecret;

/// An administrator's session that counts the master's and the roles' sessions open on the server.
/// MariaDB closes a session's socket before it forgets the thread, so a session
/// dbroles has ended (it kills its own, and waits for the server to close it)
/// may still be listed a moment longer, marked `Killed`: those are not counted.
enum Sessions {
    Postgres(tokio_postgres::Client),
    MariaDb(mysql_async::Conn, String),
}

impl Sessions {
    async fn open(server: &RdsLike, prefix: &str) -> Self {
        let sessions = match server {
            RdsLike::Postgres(cluster) => Sessions::Postgres(cluster.superuser("postgres").await),
            RdsLike::MariaDb(server) => Sessions::MariaDb(server.connect("root", "").await.unwrap(), format!("{prefix}\\_%")),
        };
        // The test's own sessions as the master (setting the server up) are gone first.
        let mut sessions = sessions;
        for _ in 0..500 {
            if sessions.count().await == 0 {
                return sessions;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the master's sessions did not end before the run");
    }

    async fn count(&mut self) -> usize {
        let count: i64 = match self {
            Sessions::Postgres(su) => {
                let sql = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'dbroles'";
                su.query_one(sql, &[]).await.unwrap().get(0)
            }
            Sessions::MariaDb(root, roles) => root
                .exec_first(
                    "SELECT count(*) FROM information_schema.processlist \
                     WHERE (user = 'master' OR user LIKE ?) AND command <> 'Killed'",
                    (roles.as_str(),),
                )
                .await
                .unwrap()
                .unwrap_or(0),
        };
        count as usize
    }
}

/// Runs `work` while the server's sessions are counted every millisecond: its result, and the most seen at once.
async fn sampled<T>(server: &RdsLike, prefix: &str, work: impl std::future::Future<Output = T>) -> (T, usize) {
    let mut sessions = Sessions::open(server, prefix).await;
    let (peak, done) = (AtomicUsize::new(0), AtomicBool::new(false));
    let sampling = async {
        while !done.load(Ordering::Relaxed) {
            peak.fetch_max(sessions.count().await, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    let working = async {
        let result = work.await;
        done.store(true, Ordering::Relaxed);
        result
    };
    let (result, ()) = tokio::join!(working, sampling);
    (result, peak.load(Ordering::Relaxed))
}

fn endpoint(target: &Target) -> Endpoint {
    Endpoint { host: "127.0.0.1".into(), port: target.port, db: "app".into(), engine: "any".into() }
}

async fn within_the_bound(server: RdsLike, target: Target) {
    for db in ["b1", "b2", "b3", "b4", "b5"] {
        server.add_database(&target, db).await;
    }
    let (_dir, store) = own_store();
    let store: &dyn SecretStore = store.as_ref();
    let prefix = unique("bd");
    for bound in [2, 1] {
        let target = Target { max_connections: bound, ..target.clone() };
        let endpoint = endpoint(&target);
        let mut peaks = Vec::new();
        for (what, mode) in [("first run", Mode::Run), ("rotation", Mode::Run), ("plan", Mode::Plan), ("revoke", Mode::Revoke)] {
            let options = Options { mode, ..Options::default() };
            let work = async {
                match mode {
                    Mode::Run => provision_roles(&target, &endpoint, &prefix, store, &secret_ref(""), options).await,
                    Mode::Plan => plan_roles(&target, &prefix, store, &secret_ref(""), options).await,
                    Mode::Revoke => revoke_roles(&target, &prefix, store, &secret_ref(""), &Level::ALL, false).await,
                }
            };
            let (outcome, peak) = sampled(&server, &prefix, work).await;
            let outcome: Outcome = outcome.unwrap_or_else(|e| panic!("{what} at a bound of {bound}: {e}"));
            for result in &outcome.results {
                assert_eq!(result.status, Phase::Completed, "{what} at a bound of {bound}: {}", result.message);
            }
            assert!(peak <= bound, "{what} at a bound of {bound} had {peak} sessions open at once");
            peaks.push(peak);
        }
        assert_eq!(server.roles_of(&prefix).await, [] as [String; 0], "the revoke at a bound of {bound} retired every role");
        // PostgreSQL reads the databases side by side for milliseconds each, so the
        // sampling sees the bound reached; MariaDB's side-by-side logins are too brief to be sure to.
        if matches!(server, RdsLike::Postgres(_)) {
            assert_eq!(peaks.iter().max(), Some(&bound), "at a bound of {bound}, some step used it: {peaks:?}");
        }
    }
}

#[tokio::test]
async fn postgres_15_never_opens_more_connections_than_the_bound() {
    let (server, target) = RdsLike::postgres(PgVersion::V15).await;
    within_the_bound(server, target).await;
}

#[tokio::test]
async fn postgres_17_never_opens_more_connections_than_the_bound() {
    let (server, target) = RdsLike::postgres(PgVersion::V17).await;
    within_the_bound(server, target).await;
}

#[tokio::test]
async fn mariadb_never_opens_more_connections_than_the_bound() {
    let (server, target) = RdsLike::mariadb().await;
    within_the_bound(server, target).await;
}

/// A superuser's event trigger in the database `split` refuses every GRANT
/// sent in a batch that names `<prefix>_rw`: there the roles' one batch fails,
/// and the roles are granted one at a time.
async fn refuse_rw_in(cluster: &PgCluster, prefix: &str) {
    let su = cluster.superuser("split").await;
    su.batch_execute(&format!(
        "CREATE FUNCTION public.refuse_rw() RETURNS event_trigger LANGUAGE plpgsql AS $$ BEGIN \
           IF current_query() LIKE '%{prefix}_rw\"%' THEN RAISE EXCEPTION 'no grants to rw here'; END IF; END $$; \
         CREATE EVENT TRIGGER refuse_rw ON ddl_command_start WHEN TAG IN ('GRANT') EXECUTE FUNCTION public.refuse_rw()"
    ))
    .await
    .unwrap();
}

async fn a_failed_database(version: PgVersion) {
    let (server, target) = RdsLike::postgres(version).await;
    let RdsLike::Postgres(cluster) = &server else { unreachable!() };
    server.add_database(&target, "split").await;
    let prefix = unique("fd");
    refuse_rw_in(cluster, &prefix).await;
    let (_dir, store) = own_store();
    let outcome = provision_roles(&target, &endpoint(&target), &prefix, store.as_ref(), &secret_ref(""), Options::default())
        .await
        .expect("the run reaches the server");
    let rw = Level::Rw.user(&prefix);
    for result in &outcome.results {
        match result.user_role == rw {
            true => {
                assert_eq!(result.status, Phase::Failed, "{}", result.message);
                let expected = "the new password works and is stored; grants failed: database split:";
                assert!(result.message.starts_with(expected), "{}", result.message);
                assert!(result.message.contains("no grants to rw here"), "{}", result.message);
            }
            false => assert_eq!(result.status, Phase::Completed, "{}", result.message),
        }
    }
    // Every password was promoted before the grants: what each consumer reads logs in.
    let mut logins = Vec::new();
    for level in Level::ALL {
        let stored = store.read(&store.secret_id(&secret_ref(&level.user(&prefix)))).await.unwrap().expect("stored");
        assert!(server.logs_in(&stored).await, "{} logs in with what the store holds", stored.user);
        logins.push((stored.user.clone(), stored.password.expose_secret().to_string()));
    }
    let [(ro_user, ro_password), (rw_user, rw_password), _] = &logins[..] else { unreachable!("three levels") };
    // The other databases have rw's grants; in split the other roles have theirs, and rw has none.
    server.run_as(&rw_user, &rw_password, "INSERT INTO public.items VALUES (2)").await.expect("rw writes in app");
    let split_ro = cluster.client(&ro_user, &ro_password, "split").await.expect("ro may connect to split");
    split_ro.query_one("SELECT count(*) FROM public.t", &[]).await.expect("ro reads split.t");
    let denied = match cluster.client(&rw_user, &rw_password, "split").await {
        Ok(split_rw) => split_rw.batch_execute("SELECT * FROM public.t").await.is_err(),
        Err(_) => true,
    };
    assert!(denied, "rw holds nothing in split");
}

#[tokio::test]
async fn postgres_15_a_failure_in_one_database_leaves_the_rest() {
    a_failed_database(PgVersion::V15).await;
}

#[tokio::test]
async fn postgres_17_a_failure_in_one_database_leaves_the_rest() {
    a_failed_database(PgVersion::V17).await;
}
