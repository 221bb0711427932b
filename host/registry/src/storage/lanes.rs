//! Write lanes: one per install, so that one install's write flood cannot crowd out the
//! writes of others.
//!
//! A storage write first takes its install's lane (a FIFO mutex), and only then its turn
//! in the process-wide write queue (SQLite) or a database connection (PostgreSQL). So an
//! install has at most one write waiting in the shared queue and at most one connection
//! waiting on its counter row's lock, however many of its calls write at once: another
//! install's write, or the execution-log writer, waits behind at most one write of each
//! install that is writing, never behind a whole flood.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::OwnedMutexGuard;

/// The lanes of one registry handle (shared by its clones).
#[derive(Default)]
pub(crate) struct WriteLanes {
    lanes: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl fmt::Debug for WriteLanes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteLanes")
            .field("lanes", &self.map().len())
            .finish()
    }
}

impl WriteLanes {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<tokio::sync::Mutex<()>>>> {
        self.lanes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for `install_id`'s lane, first come, first served among its writes.
    pub(crate) async fn enter(&self, install_id: &str) -> LaneTurn<'_> {
        let lane = self.map().entry(install_id.to_owned()).or_default().clone();
        LaneTurn {
            guard: Some(lane.lock_owned().await),
            install_id: install_id.to_owned(),
            lanes: self,
        }
    }

    /// Lanes currently kept (for tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map().len()
    }
}

/// Holds an install's lane; dropping it lets the install's next write in, and forgets the
/// lane when nobody else holds or waits for it.
pub(crate) struct LaneTurn<'a> {
    guard: Option<OwnedMutexGuard<()>>,
    install_id: String,
    lanes: &'a WriteLanes,
}

impl Drop for LaneTurn<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut map = self.lanes.map();
        // Waiters clone the lane under the map's lock, so a count of 1 (the map's own)
        // means nobody holds or waits for it.
        if map
            .get(&self.install_id)
            .is_some_and(|lane| Arc::strong_count(lane) == 1)
        {
            map.remove(&self.install_id);
        }
    }
}
