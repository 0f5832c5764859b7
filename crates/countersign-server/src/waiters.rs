//! Wake-ups for long-polls: a waiter subscribes to a request id before reading its state, and
//! a decision wakes every subscriber of that id. The store stays the truth; a wake-up only
//! says "read again".
use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::Notify;

#[derive(Debug, Default)]
pub struct Waiters {
    map: Mutex<HashMap<String, Arc<Notify>>>,
}

/// A subscription; dropping it removes the entry when it was the last.
pub struct Subscription<'a> {
    waiters: &'a Waiters,
    id: String,
    pub notify: Arc<Notify>,
}

impl Waiters {
    pub fn subscribe(&self, id: &str) -> Subscription<'_> {
        let notify = self
            .map
            .lock()
            .entry(id.to_string())
            .or_insert_with(|| Arc::new(Notify::new()))
            .clone();
        Subscription {
            waiters: self,
            id: id.to_string(),
            notify,
        }
    }

    pub fn wake(&self, id: &str) {
        if let Some(n) = self.map.lock().get(id) {
            n.notify_waiters();
        }
    }

    /// Wakes every waiter, so each re-reads the truth (after hints may have been lost).
    pub fn wake_all(&self) {
        for n in self.map.lock().values() {
            n.notify_waiters();
        }
    }

    pub fn len(&self) -> usize {
        self.map.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for Subscription<'_> {
    fn drop(&mut self) {
        let mut map = self.waiters.map.lock();
        // The map holds one reference and this subscription another: nobody else waits.
        if Arc::strong_count(&self.notify) == 2 {
            map.remove(&self.id);
        }
    }
}
