//! The connections one session opens to a server: at most its bound at once,
//! the master's and the login checks' alike, and what they sent.
//!
//! A connection takes a slot before it connects and gives it back only once it
//! has closed, so the server never sees more of dbroles' sessions than the
//! bound. No code holds one connection while it waits for another: a bound of
//! one runs everything one connection after the other.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::Report;

/// A place among the connections a session may have open.
pub(crate) struct Slot(#[allow(dead_code)] OwnedSemaphorePermit);

/// One session's connections to a server, and what they sent.
#[derive(Debug)]
pub(crate) struct Connections {
    slots: Arc<Semaphore>,
    opened: AtomicUsize,
    statements: AtomicUsize,
    round_trips: AtomicUsize,
}

impl Connections {
    /// At most `max` open at once (at least one).
    pub(crate) fn new(max: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max.max(1))),
            opened: AtomicUsize::new(0),
            statements: AtomicUsize::new(0),
            round_trips: AtomicUsize::new(0),
        }
    }

    /// Waits until fewer than the bound are open.
    pub(crate) async fn slot(&self) -> Slot {
        Slot(self.slots.clone().acquire_owned().await.expect("the semaphore is never closed"))
    }

    pub(crate) fn opened(&self) {
        self.opened.fetch_add(1, Ordering::Relaxed);
    }

    /// One round trip carrying `statements`.
    pub(crate) fn sent(&self, statements: usize) {
        self.statements.fetch_add(statements, Ordering::Relaxed);
        self.round_trips.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn report(&self, databases: Vec<String>) -> Report {
        Report {
            databases,
            connections: self.opened.load(Ordering::Relaxed),
            statements: self.statements.load(Ordering::Relaxed),
            round_trips: self.round_trips.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_slot_waits_for_one_given_back() {
        let connections = Connections::new(2);
        let (first, _second) = (connections.slot().await, connections.slot().await);
        let third = tokio::time::timeout(std::time::Duration::from_millis(50), connections.slot()).await;
        assert!(third.is_err(), "a third slot was given while two were held");
        drop(first);
        let third = tokio::time::timeout(std::time::Duration::from_secs(5), connections.slot()).await;
        assert!(third.is_ok(), "the slot given back was not given again");
    }
}
