//! [`Notifier`]: per-lock change signals for backends to hand out as [`Subscription`]s.

use crate::{LockKey, Subscription};
use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex, PoisonError};
use tokio::sync::watch;

/// A registry of per-lock change channels. A backend calls [`notify`](Notifier::notify) when a
/// lock changes (from its own operations, or from a pub/sub message, a watch event or a NOTIFY)
/// and [`subscribe`](Notifier::subscribe) for waiters. A channel lives while it has subscribers.
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    channels: Arc<StdMutex<HashMap<LockKey, watch::Sender<u64>, foldhash::fast::RandomState>>>,
}

impl Notifier {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// A subscription to `key`'s changes from now on.
    pub fn subscribe(&self, key: &LockKey) -> Subscription {
        let mut channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        let rx = channels
            .entry(key.clone())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe();
        Subscription::with_guard(
            rx,
            Unsubscribe {
                channels: Arc::clone(&self.channels),
                key: key.clone(),
            },
        )
    }

    /// Signals a change of `key` to its subscribers, if it has any.
    pub fn notify(&self, key: &LockKey) {
        let channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(tx) = channels.get(key) {
            tx.send_modify(|version| *version = version.wrapping_add(1));
        }
    }

    /// Signals a change of every lock named `name`, whatever its kind.
    pub fn notify_name(&self, name: &str) {
        let channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        for (key, tx) in channels.iter() {
            if key.name() == name {
                tx.send_modify(|version| *version = version.wrapping_add(1));
            }
        }
    }

    /// Signals a change of every lock: used after a reconnect, when messages may have been lost.
    pub fn notify_all(&self) {
        let channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        for tx in channels.values() {
            tx.send_modify(|version| *version = version.wrapping_add(1));
        }
    }

    /// True when someone waits on `key`.
    pub fn has_subscribers(&self, key: &LockKey) -> bool {
        let channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        channels.contains_key(key)
    }
}

struct Unsubscribe {
    channels: Arc<StdMutex<HashMap<LockKey, watch::Sender<u64>, foldhash::fast::RandomState>>>,
    key: LockKey,
}

impl Drop for Unsubscribe {
    fn drop(&mut self) {
        let mut channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        if channels
            .get(&self.key)
            .is_some_and(|tx| tx.receiver_count() == 0)
        {
            channels.remove(&self.key);
        }
    }
}
