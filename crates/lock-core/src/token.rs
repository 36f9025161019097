//! Fencing tokens and lease ids.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A fencing token: a number that strictly increases with every grant of one lock.
///
/// Pass it with every write to the resource the lock protects, and have the resource reject a
/// write whose token is lower than the highest it has seen: a holder that paused past its lease
/// (a GC pause, a stopped VM) then cannot overwrite the work of the next holder.
/// Readers and writers of one [`RwMutex`](crate::RwMutex) share one sequence.
///
/// ```
/// use lock_core::FencingToken;
/// let older = FencingToken::new(7);
/// let newer = FencingToken::new(8);
/// assert!(newer > older);
/// assert_eq!(newer.to_string(), "8");
/// assert_eq!(newer.get(), 8);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FencingToken(pub u64);

impl FencingToken {
    /// Wraps a raw token value.
    pub const fn new(value: u64) -> Self {
        FencingToken(value)
    }

    /// The raw value.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for FencingToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl From<FencingToken> for u64 {
    fn from(token: FencingToken) -> u64 {
        token.0
    }
}

/// The id of one lease (one grant to one holder): a ULID, unique per acquisition attempt.
///
/// Release and extend compare it, so a late release never deletes another holder's lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LeaseId(ulid::Ulid);

impl LeaseId {
    /// Generates a fresh id.
    pub fn generate() -> Self {
        LeaseId(ulid::Ulid::generate())
    }

    /// The id as its 26-character ULID string.
    pub fn to_ulid_string(self) -> String {
        self.0.to_string()
    }

    /// Parses the 26-character ULID string form.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) when `s` is not a ULID.
    pub fn parse(s: &str) -> crate::Result<Self> {
        ulid::Ulid::from_string(s).map(LeaseId).map_err(|e| {
            crate::Error::invalid_argument(format!("lease id {s:?} is not a ULID: {e}"))
        })
    }
}

impl fmt::Display for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}
