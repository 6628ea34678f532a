//! Plans (`mode: plan`) and authoritative runs with the master RDS gives, on
//! PostgreSQL 15 and 17 and on MariaDB, servers of the test's own:
//!
//! - a plan on a fresh instance creates no role and lists every change;
//! - a plan right after a run lists nothing;
//! - a grant added by hand is listed by the plan, left in place by it, and
//!   revoked by the next run;
//! - a grant the master may not revoke (another owner made it) is listed apart,
//!   and the run reports it instead of claiming it done.

use dbroles_core::engine::{Level, Target};
use dbroles_core::model::job::{Phase, RoleResult};
use dbroles_core::model::request::Mode;
use dbroles_core::provision::{plan_roles, provision_roles, Endpoint, Options, Outcome};
use dbroles_core::secrets::SecretStore;
use dbroles_tests::postgres::PgVersion;
use dbroles_tests::*;
use secrecy::ExposeSecret;

async fn plan(target: &Target, prefix: &str, store: &dyn SecretStore) -> Outcome {
    let options = Options { mode: Mode::Plan, ..Options::default() };
    plan_roles(target, prefix, store, &secret_ref(""), options).await.expect("the plan reads the server")
}

async fn run(target: &Target, prefix: &str, store: &dyn SecretStore) -> Outcome {
    let endpoint = Endpoint { host: "127.0.0.1".into(), port: target.port, db: "app".into(), engine: "any".into() };
    provision_roles(target, &endpoint, prefix, store, &secret_ref(""), Options::default())
        .await
        .expect("the run reaches the server")
}

fn role<'a>(outcome: &'a Outcome, prefix: &str, level: Level) -> &'a RoleResult {
    outcome.results.iter().find(|result| result.user_role == level.user(prefix)).expect("a result per level")
}

fn changes(result: &RoleResult) -> &[String] {
    result.changes.as_deref().expect("a plan lists changes")
}

fn assert_in_sync(outcome: &Outcome) {
    for result in &outcome.results {
        assert_eq!(result.status, Phase::Completed, "{}", result.message);
        assert_eq!(changes(result), [] as [String; 0], "{}: a plan after a run lists nothing", result.user_role);
        assert!(result.message.contains("is in sync"), "{}", result.message);
    }
}

/// The statements of each engine the test runs.
struct Sql {
    /// What the fresh plan lists for `_ro` on the master's table.
    ro_grant: &'static str,
    /// The master grants `_ro` more than its level, by hand.
    hand_grant: &'static str,
    /// How the plan names that grant's revocation.
    hand_revoke: &'static str,
}

async fn plan_then_run(server: RdsLike, target: Target, sql: Sql) {
    let (_dir, store) = own_store();
    let prefix = unique("pl");

    // A plan on a fresh instance changes nothing and lists everything.
    let fresh = plan(&target, &prefix, store.as_ref()).await;
    for level in Level::ALL {
        let result = role(&fresh, &prefix, level);
        assert_eq!(result.status, Phase::Completed, "{}", result.message);
        let listed = changes(result);
        assert!(listed.contains(&format!("create role {}", level.user(&prefix))), "{listed:?}");
        assert!(listed.contains(&"password: no stored credentials".to_string()), "{listed:?}");
        assert!(result.message.contains("has drifted"), "{}", result.message);
        assert!(store.read(&store.secret_id(&secret_ref(&level.user(&prefix)))).await.unwrap().is_none(), "nothing stored");
    }
    let ro_changes = changes(role(&fresh, &prefix, Level::Ro));
    assert!(ro_changes.iter().any(|change| change == sql.ro_grant), "{ro_changes:?}");
    assert!(ro_changes.iter().all(|change| !change.contains("INSERT")), "ro is never planned a write: {ro_changes:?}");
    assert_eq!(server.roles_of(&prefix).await, [] as [String; 0], "the plan created no role");
    let master = target.master_password.expose_secret();

    // A plan right after a run lists nothing.
    assert_completed(&run(&target, &prefix, store.as_ref()).await);
    assert_in_sync(&plan(&target, &prefix, store.as_ref()).await);

    // A grant by hand: listed by the plan, left in place by it, revoked by the next run.
    let ro = store.read(&store.secret_id(&secret_ref(&Level::Ro.user(&prefix)))).await.unwrap().unwrap();
    let hand = sql.hand_grant.replace("{ro}", &ro.user);
    server.run_as("master", master, &hand).await.expect("the master grants by hand");
    let drifted = plan(&target, &prefix, store.as_ref()).await;
    assert_eq!(changes(role(&drifted, &prefix, Level::Ro)), [sql.hand_revoke.replace("{ro}", &ro.user)]);
    assert_eq!(changes(role(&drifted, &prefix, Level::Rw)), [] as [String; 0], "other levels are in sync");
    let insert = "INSERT INTO items (id) VALUES (99)";
    server.run_as(&ro.user, ro.password.expose_secret(), insert).await.expect("the plan left the grant in place");
    let outcome = run(&target, &prefix, store.as_ref()).await;
    assert_completed(&outcome);
    let ro = store.read(&store.secret_id(&secret_ref(&Level::Ro.user(&prefix)))).await.unwrap().unwrap();
    let denied = server.run_as(&ro.user, ro.password.expose_secret(), "INSERT INTO items (id) VALUES (100)").await;
    assert!(denied.is_err(), "the run revoked the hand-made grant");
    server.run_as(&ro.user, ro.password.expose_secret(), "SELECT * FROM items").await.expect("ro still reads");
    assert_in_sync(&plan(&target, &prefix, store.as_ref()).await);
}

async fn postgres(version: PgVersion) {
    let (server, target) = RdsLike::postgres(version).await;
    let sql = Sql {
        ro_grant: "grant SELECT on table app.public.items",
        hand_grant: "GRANT INSERT, UPDATE ON public.items TO {ro}",
        hand_revoke: "revoke INSERT, UPDATE on table app.public.items (not in level ro)",
    };
    plan_then_run(server, target, sql).await;
}

#[tokio::test]
async fn postgres_15_plans_what_a_run_changes_and_runs_revoke_grants_made_by_hand() {
    postgres(PgVersion::V15).await;
}

#[tokio::test]
async fn postgres_17_plans_what_a_run_changes_and_runs_revoke_grants_made_by_hand() {
    postgres(PgVersion::V17).await;
}

#[tokio::test]
async fn mariadb_plans_what_a_run_changes_and_runs_revoke_grants_made_by_hand() {
    let (server, target) = RdsLike::mariadb().await;
    let sql = Sql {
        ro_grant: "grant SELECT, SHOW VIEW on database app",
        hand_grant: "GRANT INSERT, UPDATE ON app.* TO '{ro}'@'%'",
        hand_revoke: "revoke INSERT, UPDATE on database app (not in level ro)",
    };
    plan_then_run(server, target, sql).await;
}

/// On PostgreSQL a grant on another owner's table, made by that owner, is
/// beyond the master: the plan and the run name it and who made it, and the
/// plan after the run lists no change.
async fn not_revocable(version: PgVersion) {
    let (server, target) = RdsLike::postgres(version).await;
    let RdsLike::Postgres(cluster) = &server else { unreachable!() };
    let (_dir, store) = own_store();
    let prefix = unique("nr");
    assert_completed(&run(&target, &prefix, store.as_ref()).await);
    let su = cluster.superuser("app").await;
    su.batch_execute(&format!("GRANT DELETE ON public.audit TO {prefix}_ro")).await.unwrap();

    let planned = plan(&target, &prefix, store.as_ref()).await;
    let ro = role(&planned, &prefix, Level::Ro);
    let expected = "DELETE on table app.public.audit (not in level ro; granted by app_owner)";
    assert_eq!(ro.not_revocable, [expected]);
    assert_eq!(changes(ro), [] as [String; 0], "it is not a change a run could make");
    assert!(ro.message.contains("1 privilege(s) beyond its level the master may not revoke"), "{}", ro.message);

    let outcome = run(&target, &prefix, store.as_ref()).await;
    assert_completed(&outcome);
    assert_eq!(role(&outcome, &prefix, Level::Ro).not_revocable, [expected], "the run reports it, not claims it done");
    let after = plan(&target, &prefix, store.as_ref()).await;
    assert_eq!(changes(role(&after, &prefix, Level::Ro)), [] as [String; 0]);
    let kept = su.query_one(&format!("SELECT has_table_privilege('{prefix}_ro', 'public.audit', 'DELETE')"), &[]).await.unwrap();
    assert!(kept.get::<_, bool>(0), "the grant is where it was: the master could not revoke it");
}

#[tokio::test]
async fn postgres_15_names_a_grant_the_master_may_not_revoke() {
    not_revocable(PgVersion::V15).await;
}

#[tokio::test]
async fn postgres_17_names_a_grant_the_master_may_not_revoke() {
    not_revocable(PgVersion::V17).await;
}
