//! MariaDB with `simple_password_check` (an upper-case letter, a lower-case letter,
//! a digit and a symbol required, as MySQL's `validate_password` MEDIUM asks)
//! accepts the passwords dbroles makes. A test binary of its own: it changes the
//! shared server's policy while it runs, and no other test runs beside it.

use dbroles_core::engine::{Family, Level};
use dbroles_core::model::job::Phase;
use dbroles_core::provision::{provision_roles, Endpoint, Options};
use dbroles_core::secrets::SecretStore;
use dbroles_tests::*;
use mysql_async::prelude::Queryable;
use secrecy::ExposeSecret;

/// Uninstalls the plugin however the test ends.
struct Policy;

impl Drop for Policy {
    fn drop(&mut self) {
        let _ = std::process::Command::new("mariadb") // safe: a plugin already gone is what we want
            .args(["--protocol=tcp", "-h", "127.0.0.1", "-u", "root", "-e", "UNINSTALL SONAME 'simple_password_check'"])
            .status();
    }
}

#[tokio::test]
async fn mariadb_with_a_password_policy_accepts_the_passwords() {
    let mut root = mariadb("root", "").await.unwrap();
    root.query_drop("INSTALL SONAME 'simple_password_check'").await.expect("the plugin installs");
    let _policy = Policy;
    let weak = root.query_drop("CREATE USER 'dbroles_weak'@'%' IDENTIFIED BY 'onlylowercase'").await;
    assert!(weak.expect_err("the policy is in force").to_string().contains("policy"));

    let (_dir, store) = own_store();
    let prefix = unique("p");
    let _leaves = Leaves::new().prefix(&prefix);
    let master = format!("{prefix}_master");
    let target = target(Family::MySql, 3306, &master, rds_like_master(&master).await);
    let endpoint = Endpoint { host: "127.0.0.1".into(), port: 3306, db: String::new(), engine: "mariadb".into() };
    let outcome =
        provision_roles(&target, &endpoint, &prefix, store.as_ref(), &secret_ref(""), Options::adopting(false)).await.unwrap();
    for result in &outcome.results {
        assert_eq!(result.status, Phase::Completed, "{}: {}", result.user_role, result.message);
    }
    for level in Level::ALL {
        let user = level.user(&prefix);
        let stored = store.read(&store.secret_id(&secret_ref(&user))).await.unwrap().unwrap();
        mariadb(&user, stored.password.expose_secret()).await.expect("the role logs in");
        root.query_drop(format!("DROP USER '{user}'@'%'")).await.unwrap();
    }
    root.query_drop(format!("DROP USER '{master}'@'%'")).await.unwrap();
}
