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
    const PASSWORD: &str = "Rds-Master-Pa55word";
    let mut root = mariadb("root", "").await.expect("root logs in");
    mysql_async::prelude::Queryable::query_drop(
        &mut root,
        format!(
            "CREATE USER '{user}'@'%' IDENTIFIED BY '{PASSWORD}'; \
             GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, RELOAD, PROCESS, REFERENCES, INDEX, ALTER, SHOW DATABASES, \
             CREATE TEMPORARY TABLES, LOCK TABLES, EXECUTE, CREATE VIEW, SHOW VIEW, CREATE ROUTINE, ALTER ROUTINE, CREATE USER, \
             EVENT, TRIGGER ON *.* TO '{user}'@'%' WITH GRANT OPTION"
        ),
    )
    .await
    .expect("the RDS-like master");
    PASSWORD
}
