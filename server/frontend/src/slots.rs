//! Connection slots, as PostgreSQL counts them: `max_connections` bounds the
//! clients that have logged in, the last few of those slots are kept for
//! admins (`reserved_connections`), and sockets still in their startup
//! (TLS, password exchange) are counted apart, bounded on their own and
//! closed when they take longer than the authentication timeout. So idle
//! sockets that never log in cannot lock users out.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How long a client may take from connecting to being logged in
/// (PostgreSQL's `authentication_timeout` is 60 s).
pub const AUTHENTICATION_TIMEOUT: Duration = Duration::from_secs(10);

/// Slots of `max_connections` only admins may take (PostgreSQL's
/// `superuser_reserved_connections`).
pub const RESERVED_FOR_ADMINS: usize = 3;

/// Most sockets in their startup at once, per allowed connection, and at
/// least (each costs a task and two file descriptors until it logs in or
/// times out).
const STARTING_PER_CONNECTION: usize = 4;
const MIN_STARTING: usize = 512;

/// The frontend's counts of connections.
#[derive(Debug)]
pub struct ConnectionSlots {
    max_connections: usize,
    reserved: usize,
    max_starting: usize,
    logged_in: AtomicUsize,
    starting: AtomicUsize,
}

/// Why a client did not get a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Every slot is taken.
    Full,
    /// Only the admins' reserved slots are left.
    ReservedForAdmins,
}

impl ConnectionSlots {
    /// Slots for `max_connections` logged-in clients, the last
    /// [`RESERVED_FOR_ADMINS`] (at most all but one) kept for admins.
    pub fn new(max_connections: usize) -> Self {
        Self {
            max_connections,
            reserved: RESERVED_FOR_ADMINS.min(max_connections.saturating_sub(1)),
            max_starting: (max_connections * STARTING_PER_CONNECTION).max(MIN_STARTING),
            logged_in: AtomicUsize::new(0),
            starting: AtomicUsize::new(0),
        }
    }

    /// A new socket's slot among the starting ones; `None` when too many
    /// sockets are starting already (the socket is closed unanswered).
    pub fn accept(self: &Arc<Self>) -> Option<Arc<ConnectionSlot>> {
        let taken = self.starting.fetch_add(1, Ordering::SeqCst);
        if taken >= self.max_starting {
            self.starting.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        Some(Arc::new(ConnectionSlot {
            slots: Arc::clone(self),
            logged_in: AtomicBool::new(false),
        }))
    }

    /// Clients logged in now.
    pub fn logged_in(&self) -> usize {
        self.logged_in.load(Ordering::SeqCst)
    }
}

/// One socket's place: starting until it logs in, then among the logged-in
/// clients; given back when dropped.
#[derive(Debug)]
pub struct ConnectionSlot {
    slots: Arc<ConnectionSlots>,
    logged_in: AtomicBool,
}

impl ConnectionSlot {
    /// Moves the connection among the logged-in ones, if there is room for
    /// it (an admin may take the reserved slots).
    pub fn log_in(&self, admin: bool) -> Result<(), Refusal> {
        let slots = &self.slots;
        let limit = if admin {
            slots.max_connections
        } else {
            slots.max_connections - slots.reserved
        };
        let taken = slots.logged_in.fetch_add(1, Ordering::SeqCst);
        if taken >= limit {
            slots.logged_in.fetch_sub(1, Ordering::SeqCst);
            return Err(if taken >= slots.max_connections {
                Refusal::Full
            } else {
                Refusal::ReservedForAdmins
            });
        }
        if self.logged_in.swap(true, Ordering::SeqCst) {
            // Logged in twice: the first slot stays.
            slots.logged_in.fetch_sub(1, Ordering::SeqCst);
        } else {
            slots.starting.fetch_sub(1, Ordering::SeqCst);
        }
        Ok(())
    }

    /// Whether the connection has logged in.
    pub fn is_logged_in(&self) -> bool {
        self.logged_in.load(Ordering::SeqCst)
    }

    /// Completes when the authentication timeout has passed without a login
    /// (never, once logged in).
    pub async fn authentication_expired(&self) {
        tokio::time::sleep(AUTHENTICATION_TIMEOUT).await;
        if self.is_logged_in() {
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let count = if self.is_logged_in() {
            &self.slots.logged_in
        } else {
            &self.slots.starting
        };
        count.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starting_sockets_are_counted_apart_and_admins_keep_their_slots() {
        let slots = Arc::new(ConnectionSlots::new(5));
        let starting: Vec<_> = (0..20).map(|_| slots.accept().unwrap()).collect();
        assert_eq!(slots.logged_in(), 0);
        for slot in &starting[..2] {
            slot.log_in(false).unwrap();
        }
        assert_eq!(starting[2].log_in(false), Err(Refusal::ReservedForAdmins));
        for slot in &starting[2..5] {
            slot.log_in(true).unwrap();
        }
        assert_eq!(starting[5].log_in(true), Err(Refusal::Full));
        assert_eq!(slots.logged_in(), 5);
        drop(starting);
        assert_eq!(slots.logged_in(), 0);
        assert_eq!(slots.starting.load(Ordering::SeqCst), 0);
        let many: Vec<_> = std::iter::from_fn(|| slots.accept()).take(1000).collect();
        assert_eq!(many.len(), MIN_STARTING);
    }
}
