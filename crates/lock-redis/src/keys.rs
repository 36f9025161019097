//! Where a lock lives in Redis: key and channel names, and the metadata encoding.
//!
//! A lock named `name` of kind `kind` under prefix `p` uses
//!
//! | key | type | holds |
//! |---|---|---|
//! | `p{HEX}:kind` | hash | the lease set: limit `l`, held weight `h`, the keys' expiry `x`, leases `L<lease id>`, their metadata `D<lease id>`, claims `C<lease id>` |
//! | `p{HEX}:kind:exp` | sorted set | the leases' and claims' fields by expiry (µs) |
//! | `p{HEX}:kind:claims` | sorted set | the waiting claims' lease ids, in lexicographic (= ULID time) order |
//! | `p{HEX}:kind:token` | string | the fencing-token counter |
//! | `p{HEX}:mutex:lease` | string | a mutex's lease taken on the fast path, while nobody waits (`token\|attempt\|lease id\|owner`, with the server's native expiry) |
//! | `p{HEX}:kind:changed` | pub/sub channel | change signals |
//!
//! where `HEX` is the name's UTF-8 bytes in lowercase hexadecimal: every key of one name shares
//! the hash tag `{HEX}` (one Redis Cluster slot), and no byte of a name (a brace, a newline)
//! can break the tag or collide with another name.

use lock_core::{LockKey, LockKind, Metadata};
use std::fmt::Write as _;

pub(crate) const KINDS: [LockKind; 3] = [LockKind::Mutex, LockKind::RwMutex, LockKind::Semaphore];

/// Key and channel names under one prefix.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    prefix: String,
}

impl Layout {
    pub(crate) fn new(prefix: &str) -> Self {
        Layout {
            prefix: prefix.to_owned(),
        }
    }

    fn base(&self, name: &str, kind: LockKind) -> String {
        let mut out = String::with_capacity(self.prefix.len() + name.len() * 2 + 16);
        out.push_str(&self.prefix);
        out.push('{');
        out.push_str(&hex(name));
        out.push_str("}:");
        out.push_str(kind.as_str());
        out
    }

    /// The hash holding the lease set.
    pub(crate) fn set(&self, key: &LockKey) -> String {
        self.base(key.name(), key.kind())
    }

    /// The lease set of `name` of `kind`.
    pub(crate) fn set_of(&self, name: &str, kind: LockKind) -> String {
        self.base(name, kind)
    }

    /// The sorted set of entry expiries.
    pub(crate) fn expiries(&self, key: &LockKey) -> String {
        self.expiries_of(key.name(), key.kind())
    }

    /// The sorted set of entry expiries of `name` of `kind`.
    pub(crate) fn expiries_of(&self, name: &str, kind: LockKind) -> String {
        self.base(name, kind) + ":exp"
    }

    /// The sorted set of waiting claims.
    pub(crate) fn claims(&self, key: &LockKey) -> String {
        self.claims_of(key.name(), key.kind())
    }

    /// The sorted set of waiting claims of `name` of `kind`.
    pub(crate) fn claims_of(&self, name: &str, kind: LockKind) -> String {
        self.base(name, kind) + ":claims"
    }

    /// The token counter.
    pub(crate) fn counter(&self, key: &LockKey) -> String {
        self.base(key.name(), key.kind()) + ":token"
    }

    /// The mutex fast path's lease key (used with kind [`LockKind::Mutex`] only).
    pub(crate) fn fast(&self, key: &LockKey) -> String {
        self.fast_of(key.name(), key.kind())
    }

    /// The fast path's lease key of `name` of `kind`.
    pub(crate) fn fast_of(&self, name: &str, kind: LockKind) -> String {
        self.base(name, kind) + ":lease"
    }

    /// The change channel.
    pub(crate) fn channel(&self, key: &LockKey) -> String {
        self.channel_of(key.name(), key.kind())
    }

    /// The change channel of `name` of `kind`.
    pub(crate) fn channel_of(&self, name: &str, kind: LockKind) -> String {
        self.base(name, kind) + ":changed"
    }

    /// The prefix with the glob characters of Redis patterns escaped.
    fn escaped_prefix(&self) -> String {
        let mut out = String::with_capacity(self.prefix.len() + 4);
        for c in self.prefix.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                out.push('\\');
            }
            out.push(c);
        }
        out
    }

    /// The pattern matching every change channel under the prefix (glob characters of the
    /// prefix escaped).
    pub(crate) fn pattern(&self) -> String {
        self.escaped_prefix() + "{*}:*:changed"
    }

    /// The `SCAN MATCH` pattern of every key of the names whose hex starts with `hex_prefix`
    /// (the hex of a name prefix: hex digits only, nothing to escape).
    pub(crate) fn list_pattern(&self, hex_prefix: &str) -> String {
        let mut out = self.escaped_prefix();
        out.push('{');
        out.push_str(hex_prefix);
        out.push('*');
        out
    }

    /// The hex name of a key that exists while its lock has leases: a lease set (hash) or a
    /// mutex fast path's lease. `None` for every other key (expiry indexes, claims, token
    /// counters) and for keys of another layout.
    pub(crate) fn listed_hex<'k>(&self, key: &'k str) -> Option<&'k str> {
        let rest = key.strip_prefix(&self.prefix)?.strip_prefix('{')?;
        let (hex, rest) = rest.split_once('}')?;
        let kind = rest.strip_prefix(':')?;
        let listed = kind == "mutex:lease" || KINDS.iter().any(|k| k.as_str() == kind);
        (listed && !hex.is_empty() && hex.len().is_multiple_of(2)).then_some(hex)
    }

    /// The lock a change channel belongs to; `None` for a channel of another layout.
    pub(crate) fn parse_channel(&self, channel: &str) -> Option<LockKey> {
        let rest = channel.strip_prefix(&self.prefix)?.strip_prefix('{')?;
        let rest = rest.strip_suffix(":changed")?;
        let (hex, kind) = rest.split_once("}:")?;
        let kind = KINDS.into_iter().find(|k| k.as_str() == kind)?;
        LockKey::new(&unhex(hex)?, kind).ok()
    }
}

/// Lowercase hex of the name's UTF-8 bytes, as in the keys.
pub(crate) fn hex(name: &str) -> String {
    let mut out = String::with_capacity(name.len() * 2);
    for byte in name.as_bytes() {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// The name whose [`hex`] is `hex`; `None` when it is not (odd length, a non-hex digit,
/// bytes that are not UTF-8).
pub(crate) fn unhex(hex: &str) -> Option<String> {
    if !hex.len().is_multiple_of(2) || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok()
}

/// Encodes metadata as length-prefixed pairs: `<len>:<key><len>:<value>...`.
pub(crate) fn encode_metadata(metadata: &Metadata) -> String {
    let mut out = String::new();
    for (k, v) in metadata {
        let _ = write!(out, "{}:{k}{}:{v}", k.len(), v.len());
    }
    out
}

/// Decodes [`encode_metadata`]'s format; `None` when malformed.
pub(crate) fn decode_metadata(mut s: &str) -> Option<Metadata> {
    fn item<'a>(s: &mut &'a str) -> Option<&'a str> {
        let (len, rest) = s.split_once(':')?;
        let len: usize = len.parse().ok()?;
        let value = rest.get(..len)?;
        *s = &rest[len..];
        Some(value)
    }
    let mut metadata = Metadata::new();
    while !s.is_empty() {
        let k = item(&mut s)?;
        let v = item(&mut s)?;
        metadata.insert(k.to_owned(), v.to_owned());
    }
    Some(metadata)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn braces_and_newlines_stay_inside_the_tag() {
        let layout = Layout::new("lock:");
        for name in ["{a}", "}{", "a\nb", "ünï {x}", "plain"] {
            let key = LockKey::new(name, LockKind::Semaphore).unwrap();
            let set = layout.set(&key);
            let tag_start = set.find('{').unwrap();
            let tag_end = set.find('}').unwrap();
            assert_eq!(&set[..tag_start], "lock:");
            assert!(
                set[tag_start + 1..tag_end]
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit())
            );
            assert!(layout.counter(&key).starts_with(&set[..=tag_end]));
            assert_eq!(layout.parse_channel(&layout.channel(&key)), Some(key));
        }
        assert_eq!(layout.parse_channel("lock:{zz}:mutex:changed"), None);
        assert_eq!(layout.parse_channel("other:{61}:mutex:changed"), None);
    }

    #[test]
    fn pattern_escapes_glob_characters() {
        assert_eq!(Layout::new("a*[b]:").pattern(), "a\\*\\[b\\]:{*}:*:changed");
        assert_eq!(Layout::new("a*[b]:").list_pattern("6a"), "a\\*\\[b\\]:{6a*");
    }

    #[test]
    fn listed_keys_are_lease_sets_and_fast_leases() {
        let layout = Layout::new("lock:");
        let name = "jobs/{x}";
        let hex = hex(name);
        for kind in KINDS {
            let key = LockKey::new(name, kind).unwrap();
            assert_eq!(layout.listed_hex(&layout.set(&key)), Some(hex.as_str()));
            assert_eq!(layout.listed_hex(&layout.expiries(&key)), None);
            assert_eq!(layout.listed_hex(&layout.claims(&key)), None);
            assert_eq!(layout.listed_hex(&layout.counter(&key)), None);
            assert_eq!(layout.listed_hex(&layout.channel(&key)), None);
        }
        let mutex = LockKey::new(name, LockKind::Mutex).unwrap();
        assert_eq!(layout.listed_hex(&layout.fast(&mutex)), Some(hex.as_str()));
        assert_eq!(unhex(&hex).as_deref(), Some(name));
        assert_eq!(layout.listed_hex("other:{61}:mutex"), None);
        assert_eq!(layout.listed_hex("lock:{}:mutex"), None);
        assert_eq!(layout.listed_hex("lock:{616}:mutex"), None);
        assert_eq!(unhex("zz"), None);
        assert_eq!(unhex("ff"), None);
    }

    #[test]
    fn metadata_round_trips() {
        let mut m = Metadata::new();
        m.insert("host".into(), "worker-7".into());
        m.insert("job".into(), "nightly {v2}: 3:4".into());
        m.insert("".into(), "ü".into());
        assert_eq!(decode_metadata(&encode_metadata(&m)), Some(m));
        assert_eq!(decode_metadata(""), Some(Metadata::new()));
        assert_eq!(decode_metadata("5:ab"), None);
    }
}
