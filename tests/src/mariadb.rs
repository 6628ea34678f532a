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
