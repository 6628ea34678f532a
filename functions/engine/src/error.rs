//! What a database said when it refused or failed, read once: a message that
//! names no secret, and whether trying again may help (a fail-over, a deadlock,
//! too many connections) or cannot (a wrong password, a missing privilege).

use std::fmt::Display;

/// A database's failure. `transient` is the retry decision, made here and nowhere else.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DbError {
    pub message: String,
    pub transient: bool,
}

/// SQLSTATEs worth another attempt: serialization failure, deadlock, too many
/// connections, and the server shutting down or starting up (a fail-over).
const TRANSIENT_SQLSTATES: [&str; 6] = ["40001", "40P01", "53300", "57P01", "57P02", "57P03"];

/// MySQL/MariaDB server errors worth another attempt: lock wait timeout, deadlock,
/// too many connections, server shutting down.
const TRANSIENT_MYSQL_CODES: [u16; 4] = [1205, 1213, 1040, 1053];

impl DbError {
    pub fn permanent(message: impl Into<String>) -> Self {
        Self { message: message.into(), transient: false }
    }

    pub fn transient(message: impl Into<String>) -> Self {
        Self { message: message.into(), transient: true }
    }

    /// The same failure, with what was being done in front.
    pub fn context(self, what: impl Display) -> Self {
        Self { message: format!("{what}: {}", self.message), ..self }
    }

    /// The same failure, its message withheld if it quotes any part of `secrets`
    /// (a syntax error echoes the statement, and with it `IDENTIFIED BY '...'`).
    pub fn scrubbed(self, secrets: &[&str]) -> Self {
        const WINDOW: usize = 8;
        let quotes = |secret: &&str| {
            let bytes = secret.as_bytes();
            bytes.len() >= WINDOW
                && bytes.windows(WINDOW).any(|part| std::str::from_utf8(part).is_ok_and(|part| self.message.contains(part)))
        };
        match secrets.iter().any(quotes) {
            true => Self { message: "the server's message is withheld: it quoted the statement".into(), ..self },
            false => self,
        }
    }

    /// A PostgreSQL error: the server's message and SQLSTATE, or the client's chain of causes.
    pub fn from_postgres(error: &tokio_postgres::Error) -> Self {
        if let Some(db) = error.as_db_error() {
            let code = db.code().code();
            let transient = TRANSIENT_SQLSTATES.contains(&code) || code.starts_with("08");
            return Self { message: format!("{} (SQLSTATE {code})", db.message()), transient };
        }
        let transient = error.is_closed() || io_cause(error).is_some_and(is_transient_io);
        Self { message: chain(error), transient }
    }

    /// A MySQL/MariaDB error.
    pub fn from_mysql(error: &mysql_async::Error) -> Self {
        use mysql_async::{DriverError, Error, IoError};
        let transient = match error {
            Error::Server(server) => TRANSIENT_MYSQL_CODES.contains(&server.code),
            Error::Io(IoError::Io(io)) => is_transient_io(io),
            Error::Driver(DriverError::ConnectionClosed | DriverError::PoolDisconnected) => true,
            _ => false,
        };
        Self { message: error.to_string(), transient }
    }
}

/// Refused, reset, aborted or cut short: the server went away or is not there yet.
fn is_transient_io(error: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        error.kind(),
        ConnectionRefused | ConnectionReset | ConnectionAborted | NotConnected | BrokenPipe | TimedOut | UnexpectedEof
    )
}

fn io_cause<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a std::io::Error> {
    let mut source = error.source();
    while let Some(inner) = source {
        if let Some(io) = inner.downcast_ref::<std::io::Error>() {
            return Some(io);
        }
        source = inner.source();
    }
    None
}

/// An error and its sources, `: `-separated.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text = format!("{text}: {inner}");
        source = inner.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_connection_is_transient_and_a_denied_one_is_not() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(DbError::from_mysql(&mysql_async::Error::Io(mysql_async::IoError::Io(refused))).transient);
        let denied = mysql_async::Error::Server(mysql_async::ServerError {
            code: 1045,
            message: "Access denied".into(),
            state: "28000".into(),
        });
        assert!(!DbError::from_mysql(&denied).transient);
        let deadlock = mysql_async::Error::Server(mysql_async::ServerError {
            code: 1213,
            message: "Deadlock found".into(),
            state: "40001".into(),
        });
        assert!(DbError::from_mysql(&deadlock).transient);
    }

    #[test]
    fn a_message_quoting_a_password_is_withheld() {
        let password = "Kq3-vX9_pLm2Zt7wQe4RnB8yUc1HsD6gFa5JkT0o";
        let echoed = DbError::permanent(format!(
            "You have an error in your SQL syntax; check the manual near 'IDENTIFIED BY '{}' at line 1",
            &password[..30]
        ));
        let scrubbed = echoed.scrubbed(&[password]);
        assert!(!scrubbed.message.contains(&password[..8]), "{}", scrubbed.message);
        let unrelated = DbError::permanent("Access denied for user 'master'@'%'");
        assert_eq!(unrelated.clone().scrubbed(&[password]), unrelated);
    }

    #[test]
    fn context_keeps_the_retry_decision() {
        let error = DbError::transient("reset").context("connecting to db:5432");
        assert_eq!(error.message, "connecting to db:5432: reset");
        assert!(error.transient);
    }
}
