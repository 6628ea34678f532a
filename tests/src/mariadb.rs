//! The machine's MariaDB on 127.0.0.1:3306.

/// The machine's MariaDB as root.
pub fn mariadb_opts(user: &str, password: &str) -> mysql_async::Opts {
    mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(3306)
        .user(Some(user))
        .pass(Some(password))
        .prefer_socket(false)
        .into()
}

pub async fn mariadb(user: &str, password: &str) -> Result<mysql_async::Conn, mysql_async::Error> {
    mysql_async::Conn::new(mariadb_opts(user, password)).await
}

/// A master like the one RDS gives on MySQL and MariaDB: the application
/// privileges WITH GRANT OPTION and CREATE USER, no SUPER, FILE or SHUTDOWN.
/// Its password.
pub async fn rds_like_master(user: &str) -> &'static str {
    let mut root = mariadb("root", "").await.expect("root logs in");
    make_rds_like_master(&mut root, user).await
}

const RDS_LIKE_PASSWORD: &str = "Rds-Master-Pa55word";

async fn make_rds_like_master(root: &mut mysql_async::Conn, user: &str) -> &'static str {
    mysql_async::prelude::Queryable::query_drop(
        root,
        format!(
            "CREATE USER '{user}'@'%' IDENTIFIED BY '{RDS_LIKE_PASSWORD}'; \
             GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, RELOAD, PROCESS, REFERENCES, INDEX, ALTER, SHOW DATABASES, \
             CREATE TEMPORARY TABLES, LOCK TABLES, EXECUTE, CREATE VIEW, SHOW VIEW, CREATE ROUTINE, ALTER ROUTINE, CREATE USER, \
             EVENT, TRIGGER ON *.* TO '{user}'@'%' WITH GRANT OPTION"
        ),
    )
    .await
    .expect("the RDS-like master");
    RDS_LIKE_PASSWORD
}

/// A MariaDB of the test's own, with TLS: a temporary data directory, a free
/// port, and a server certificate for `names` signed by a CA made in the test.
/// Root logs in from 127.0.0.1 with an empty password. Stopped when dropped.
pub struct MariaDbServer {
    pub port: u16,
    /// The CA that signed the server's certificate, and one that did not.
    pub ca_file: std::path::PathBuf,
    pub other_ca_file: std::path::PathBuf,
    server: std::process::Child,
    _dir: tempfile::TempDir,
}

/// A new data directory under `root`, and a temporary directory of its own:
/// servers bootstrapped at once in /tmp can trip over each other's files.
fn install(root: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (data, tmp) = (root.join("data"), root.join("tmp"));
    std::fs::create_dir(&tmp).unwrap();
    let installed = std::process::Command::new("mariadb-install-db")
        .args(["--no-defaults", "--user=root", "--auth-root-authentication-method=normal", "--skip-test-db"])
        .arg(format!("--datadir={}", data.display()))
        .arg(format!("--tmpdir={}", tmp.display()))
        .output()
        .expect("mariadb-install-db runs");
    assert!(installed.status.success(), "mariadb-install-db: {}", String::from_utf8_lossy(&installed.stderr));
    (data, tmp)
}

impl MariaDbServer {
    pub async fn start_for(names: &[&str]) -> Self {
        use std::process::{Command, Stdio};
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let (ca, cert, key) = crate::postgres::certificates(names);
        let (other_ca, _, _) = crate::postgres::certificates(names);
        for (file, pem) in [("ca.pem", &ca), ("other-ca.pem", &other_ca), ("cert.pem", &cert), ("key.pem", &key)] {
            std::fs::write(root.join(file), pem).unwrap();
        }
        let (data, tmp) = install(root);
        let path = |file: &str| root.join(file).display().to_string();
        // Another process may take the port between `free_port` and the bind:
        // the server then exits, and starts again on another port.
        for _ in 0..5 {
            let port = crate::free_port();
            let mut server = Command::new("/usr/sbin/mariadbd")
                .arg("--no-defaults")
                .arg(format!("--datadir={}", data.display()))
                .arg(format!("--tmpdir={}", tmp.display()))
                .args([format!("--port={port}"), "--bind-address=127.0.0.1".into(), "--user=root".into()])
                .args([format!("--socket={}", path("mysqld.sock")), format!("--pid-file={}", path("mysqld.pid"))])
                .args([
                    format!("--ssl-ca={}", path("ca.pem")),
                    format!("--ssl-cert={}", path("cert.pem")),
                    format!("--ssl-key={}", path("key.pem")),
                ])
                .arg(format!("--log-error={}", path("error.log")))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("mariadbd starts");
            for _ in 0..100 {
                if server.try_wait().expect("mariadbd's status").is_some() {
                    break;
                }
                let opts = mysql_async::OptsBuilder::from_opts(mariadb_opts("root", "")).tcp_port(port);
                if let Ok(conn) = mysql_async::Conn::new(opts).await {
                    let _ = conn.disconnect().await;
                    let (ca_file, other_ca_file) = (root.join("ca.pem"), root.join("other-ca.pem"));
                    return Self { port, ca_file, other_ca_file, server, _dir: dir };
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            let _ = server.kill();
            let _ = server.wait();
            let log = std::fs::read_to_string(root.join("error.log")).unwrap_or_default();
            if !log.contains("Address already in use") {
                panic!("the test's MariaDB did not start on port {port}: {log}");
            }
            let _ = std::fs::remove_file(root.join("error.log"));
        }
        panic!("the test's MariaDB found no free port in five tries");
    }

    pub async fn connect(&self, user: &str, password: &str) -> Result<mysql_async::Conn, mysql_async::Error> {
        let opts = mysql_async::OptsBuilder::from_opts(mariadb_opts(user, password)).tcp_port(self.port);
        mysql_async::Conn::new(opts).await
    }

    /// [`rds_like_master`] on this server, and RDS's `mysql.rds_kill(id)`, by
    /// which a master without SUPER ends another user's session; its password.
    pub async fn rds_like_master(&self, user: &str) -> &'static str {
        let mut root = self.connect("root", "").await.expect("root logs in");
        let password = make_rds_like_master(&mut root, user).await;
        mysql_async::prelude::Queryable::query_drop(
            &mut root,
            format!(
                "CREATE PROCEDURE IF NOT EXISTS mysql.rds_kill(IN thread BIGINT UNSIGNED) SQL SECURITY DEFINER \
                 BEGIN KILL CONNECTION thread; END; \
                 GRANT EXECUTE ON PROCEDURE mysql.rds_kill TO '{user}'@'%'"
            ),
        )
        .await
        .expect("RDS's rds_kill");
        password
    }
}

impl Drop for MariaDbServer {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}
