//! Change signals for one waiter: an etcd watch on its predecessor in the queue.
//!
//! A background task reads the lock's keys (keys only), finds the waiter's own key and the key
//! created just before it (its predecessor), and watches that key alone from the revision after
//! the read, so no event between the read and the watch is lost. Any change of the predecessor
//! (deleted: released, expired, withdrawn; re-written: granted) signals the waiter, and the
//! task starts over with the new predecessor. A release of a key further ahead is not
//! signalled: the waiter sees it at its claim refresh or fallback poll. No herd: a release wakes
//! only the waiter right behind it.
//!
//! After an event the task reads the lock again *at the event's revision* and watches from the
//! one after, so a change between the event and the re-read (the new predecessor already gone)
//! is still seen. After an error (a broken stream, a compacted revision) it signals at once and
//! again once the next watch is in place, since changes in between went unwatched.
//!
//! Until the waiter's own claim exists (the first attempt is still on its way) the task
//! watches the whole lock and signals deletions; a waiter with nothing ahead of it (only
//! leases granted later by `try_*`) does the same.

use etcd_client::{Client, EventType, GetOptions, WatchFilterType, WatchOptions};
use lock_core::Subscription;
use std::time::Duration;
use tokio::sync::watch;

/// Aborts the follower task when the subscription is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What one watch waits for.
enum Target {
    /// Any change of this key (the predecessor).
    Predecessor(Vec<u8>),
    /// Any deletion in the lock other than the waiter's own key.
    AnyDeletion,
    /// The waiter's own key being created (then re-plan), or any deletion (signal).
    OwnKey,
}

/// Starts following `own_key`'s predecessor under `base`.
pub(crate) fn follow(
    client: Client,
    timeout: Duration,
    base: String,
    own_key: String,
) -> Subscription {
    let (tx, rx) = watch::channel(0u64);
    let task = tokio::spawn(async move {
        let signal = || tx.send_modify(|v| *v = v.wrapping_add(1));
        // Where the next step reads the lock: at the revision of the event that ended the last
        // watch, so a change between that event and the read is seen by the next watch; the
        // latest revision at first and after an error.
        let mut at = None;
        // After an error, changes since the last watch went unseen: signal once the next watch
        // is in place.
        let mut resignal = false;
        loop {
            match step(&client, timeout, &base, own_key.as_bytes(), at, &mut || {
                if std::mem::take(&mut resignal) {
                    signal();
                }
            })
            .await
            {
                Ok(Next {
                    signal: wake,
                    at: event,
                }) => {
                    at = Some(event);
                    if wake {
                        signal();
                    }
                }
                Err(_) => {
                    // The watch broke (a node went away, a cut link, a compacted revision): let
                    // the waiter re-check now and again once the next watch is in place.
                    signal();
                    at = None;
                    resignal = true;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
            if tx.is_closed() {
                break;
            }
        }
    });
    Subscription::with_guard(rx, AbortOnDrop(task))
}

/// How a watch ended.
struct Next {
    /// The waiter should re-check (else: re-plan without a signal).
    signal: bool,
    /// The revision of the event that ended it.
    at: i64,
}

/// One read (at revision `at`, or the latest) and one watch from the revision after it.
/// `watching` runs once the watch is in place.
async fn step(
    client: &Client,
    timeout: Duration,
    base: &str,
    own_key: &[u8],
    at: Option<i64>,
    watching: &mut (dyn FnMut() + Send),
) -> Result<Next, Box<dyn std::error::Error + Send + Sync>> {
    let mut kv = client.kv_client();
    let mut options = GetOptions::new().with_prefix().with_keys_only();
    if let Some(at) = at {
        // A compacted revision fails the read: the caller signals and reads the latest.
        options = options.with_revision(at);
    }
    let read = tokio::time::timeout(timeout, kv.get(base, Some(options))).await??;
    let revision = match at {
        Some(at) => at,
        None => read
            .header()
            .map(etcd_client::ResponseHeader::revision)
            .ok_or("etcd response without a header")?,
    };
    let own = read.kvs().iter().find(|kv| kv.key() == own_key);
    let target = match own {
        Some(own) => read
            .kvs()
            .iter()
            .filter(|kv| kv.create_revision() < own.create_revision())
            .max_by_key(|kv| kv.create_revision())
            .map_or(Target::AnyDeletion, |p| {
                Target::Predecessor(p.key().to_vec())
            }),
        None => Target::OwnKey,
    };
    let options = WatchOptions::new().with_start_revision(revision + 1);
    let (key, options) = match &target {
        Target::Predecessor(key) => (key.clone(), options),
        Target::AnyDeletion => (
            base.as_bytes().to_vec(),
            options.with_prefix().with_filters([WatchFilterType::NoPut]),
        ),
        Target::OwnKey => (base.as_bytes().to_vec(), options.with_prefix()),
    };
    let mut watcher = client.watch_client();
    let mut stream = tokio::time::timeout(timeout, watcher.watch(key, Some(options))).await??;
    watching();
    loop {
        let Some(message) = stream.message().await? else {
            return Err("etcd watch stream closed".into());
        };
        if message.canceled() {
            return Err(format!("etcd watch cancelled: {}", message.cancel_reason()).into());
        }
        for event in message.events() {
            let key = event.kv().map(etcd_client::KeyValue::key);
            let at = event
                .kv()
                .map_or(revision, etcd_client::KeyValue::mod_revision);
            let deleted = event.event_type() == EventType::Delete;
            let signal = match &target {
                Target::Predecessor(_) => true,
                Target::AnyDeletion if deleted && key != Some(own_key) => true,
                Target::OwnKey if key == Some(own_key) => false,
                Target::OwnKey if deleted => true,
                Target::AnyDeletion | Target::OwnKey => continue,
            };
            return Ok(Next { signal, at });
        }
    }
}
