//! The key layout and the stored value.
//!
//! `{prefix}{hex(name)}/{kind}/{lease id}`: the name is hex-encoded, so it never contains `/`
//! and the range of `a` (`{prefix}61/`) can never hold a key of `a/b` (`{prefix}612f62/`).
//! One key per request: a waiting claim or a granted lease, each attached to its own etcd lease.

use lock_core::backend::weight;
use lock_core::{Error, LockKey, LockKind, Metadata, Mode, Result};
use serde::{Deserialize, Serialize};

/// Lowercase hex of the name's bytes.
pub(crate) fn hex(name: &str) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(name.len() * 2);
    for byte in name.bytes() {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// The name whose [`hex`] is `hex`; `None` when it is not one (odd length, a character that
/// is not a lowercase hex digit, bytes that are not UTF-8).
pub(crate) fn unhex(hex: &[u8]) -> Option<String> {
    if !hex.len().is_multiple_of(2) || !hex.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let digit = |b: u8| if b <= b'9' { b - b'0' } else { b - b'a' + 10 };
    let bytes = hex
        .chunks_exact(2)
        .map(|pair| (digit(pair[0]) << 4) | digit(pair[1]))
        .collect();
    String::from_utf8(bytes).ok()
}

/// The segment of a key under `prefix` that names its lock: what follows the prefix, up to
/// the first `/` (the hex of the name, for a key of this layout).
pub(crate) fn segment<'k>(prefix: &[u8], key: &'k [u8]) -> Option<&'k [u8]> {
    let rest = key.strip_prefix(prefix)?;
    Some(rest.split(|b| *b == b'/').next().unwrap_or(rest))
}

/// The end of the range of the keys that start with `key`, as etcd takes it: `key` with its
/// last byte below 0xff raised by one and what follows dropped; `[0]` (every key from the
/// start on) when there is none.
pub(crate) fn prefix_end(key: &[u8]) -> Vec<u8> {
    match key.iter().rposition(|b| *b < 0xff) {
        Some(i) => {
            let mut end = key[..=i].to_vec();
            end[i] += 1;
            end
        }
        None => vec![0],
    }
}

/// `{prefix}{hex(name)}/`: every kind of lock with this name.
pub(crate) fn name_prefix(prefix: &str, name: &str) -> String {
    format!("{prefix}{}/", hex(name))
}

/// `{prefix}{hex(name)}/{kind}/`: one lock's lease set.
pub(crate) fn lock_prefix(prefix: &str, key: &LockKey) -> String {
    format!(
        "{}{}/",
        name_prefix(prefix, key.name()),
        key.kind().as_str()
    )
}

/// The kind segment of a key under a name prefix.
pub(crate) fn kind_of(rest: &str) -> Option<LockKind> {
    let kind = rest.split('/').next()?;
    [LockKind::Mutex, LockKind::RwMutex, LockKind::Semaphore]
        .into_iter()
        .find(|k| k.as_str() == kind)
}

/// What a request's key holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Stored {
    /// True once granted; false while it is a waiting claim.
    pub(crate) held: bool,
    pub(crate) owner: String,
    pub(crate) mode: Mode,
    pub(crate) permits: u32,
    /// The lock's limit, stored with every entry of the set.
    pub(crate) limit: u32,
    /// The fencing token when it is not the key's mod revision (after an extend that moved the
    /// key to a lease with another TTL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) token: Option<u64>,
    /// The TTL in whole seconds the key's etcd lease was granted with (by the server: at
    /// least its minimum).
    pub(crate) lease_ttl: i64,
    /// The TTL in whole seconds that was asked for when the lease was granted (absent in
    /// entries written before it was stored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) asked_ttl: Option<i64>,
    /// True when the key's etcd lease is a session lease, shared with the client's other grants
    /// (never revoked for one key): absent (false) for a lease of the key's own.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) session: bool,
    #[serde(default)]
    pub(crate) metadata: Metadata,
}

impl Stored {
    pub(crate) fn weight(&self) -> u64 {
        weight(self.mode, self.permits, self.limit)
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        // Serialising plain strings and numbers cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub(crate) fn decode(key: &[u8], value: &[u8]) -> Result<Self> {
        serde_json::from_slice(value).map_err(|e| {
            Error::unavailable(
                "etcd",
                format!(
                    "unreadable lock entry at key {:?}: {e}",
                    String::from_utf8_lossy(key)
                ),
            )
        })
    }
}

/// An entry of a lock's lease set, as read.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) key: Vec<u8>,
    pub(crate) stored: Stored,
    pub(crate) create_revision: i64,
    pub(crate) mod_revision: i64,
    pub(crate) lease: i64,
}

impl Entry {
    pub(crate) fn from_kv(kv: &etcd_client::KeyValue) -> Result<Self> {
        Ok(Entry {
            key: kv.key().to_vec(),
            stored: Stored::decode(kv.key(), kv.value())?,
            create_revision: kv.create_revision(),
            mod_revision: kv.mod_revision(),
            lease: kv.lease(),
        })
    }

    /// The fencing token of a granted entry.
    pub(crate) fn token(&self) -> u64 {
        self.stored
            .token
            .unwrap_or(u64::try_from(self.mod_revision).unwrap_or(0))
    }
}

/// A TTL in whole seconds for an etcd lease, rounded up (never shorter than asked), at least 1.
pub(crate) fn lease_secs(ttl: std::time::Duration) -> i64 {
    let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    i64::try_from(secs.max(1)).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn names_never_share_a_prefix() {
        let a = LockKey::new("a", LockKind::Mutex).unwrap();
        let ab = LockKey::new("a/b", LockKind::Mutex).unwrap();
        let pa = lock_prefix("/locks/", &a);
        let pab = lock_prefix("/locks/", &ab);
        assert_eq!(pa, "/locks/61/mutex/");
        assert!(!pab.starts_with(&name_prefix("/locks/", "a")));
        assert!(!pa.starts_with(&name_prefix("/locks/", "a/b")));
        assert_eq!(kind_of("rwmutex/01ARZ"), Some(LockKind::RwMutex));
        assert_eq!(kind_of("other/x"), None);
    }

    #[test]
    fn segments_name_their_lock() {
        let key = LockKey::new("a/b", LockKind::Mutex).unwrap();
        let full = format!("{}01ARZ", lock_prefix("/locks/", &key));
        assert_eq!(segment(b"/locks/", full.as_bytes()), Some(&b"612f62"[..]));
        assert_eq!(unhex(b"612f62").as_deref(), Some("a/b"));
        assert_eq!(segment(b"/locks/", b"/locks/abc"), Some(&b"abc"[..]));
        assert_eq!(segment(b"/locks/", b"/other/61/mutex/x"), None);
        assert_eq!(unhex(b"6"), None);
        assert_eq!(unhex(b"6G"), None);
        assert_eq!(unhex(b"6A"), None);
        assert_eq!(unhex(b"ff"), None);
        assert_eq!(unhex(b"").as_deref(), Some(""));
        assert_eq!(prefix_end(b"/locks/61"), b"/locks/62");
        assert_eq!(prefix_end(b"a\xff\xff"), b"b");
        assert_eq!(prefix_end(b"\xff"), vec![0]);
        assert_eq!(prefix_end(b""), vec![0]);
    }

    #[test]
    fn lease_seconds_round_up() {
        assert_eq!(lease_secs(Duration::from_millis(1)), 1);
        assert_eq!(lease_secs(Duration::from_millis(1000)), 1);
        assert_eq!(lease_secs(Duration::from_millis(1001)), 2);
        assert_eq!(lease_secs(Duration::from_secs(30)), 30);
    }

    #[test]
    fn stored_round_trips() {
        let stored = Stored {
            held: true,
            owner: "o\"wner".into(),
            mode: Mode::Shared,
            permits: 2,
            limit: 5,
            token: None,
            lease_ttl: 3,
            asked_ttl: Some(1),
            session: false,
            metadata: [("k".to_owned(), "v\n".to_owned())].into(),
        };
        let back = Stored::decode(b"k", &stored.encode()).unwrap();
        assert_eq!(back.owner, stored.owner);
        assert_eq!(back.metadata, stored.metadata);
        assert_eq!(back.weight(), 2);
        assert!(Stored::decode(b"k", b"not json").is_err());
    }
}
