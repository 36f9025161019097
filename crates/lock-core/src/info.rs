//! What a lock is, and what inspection reports about its holders.

use crate::{Error, FencingToken, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

/// The longest lock name, in bytes.
pub const MAX_NAME_LEN: usize = 1024;

/// Free-form key/value pairs stored with a lease and returned by inspection.
pub type Metadata = BTreeMap<String, String>;

/// The three lock types. Locks of different kinds never interfere, even with the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LockKind {
    /// An exclusive lock ([`Mutex`](crate::Mutex)).
    Mutex,
    /// A read-write lock ([`RwMutex`](crate::RwMutex)).
    RwMutex,
    /// A counting semaphore ([`Semaphore`](crate::Semaphore)).
    Semaphore,
}

impl LockKind {
    /// The kind as a short lowercase word (`mutex`, `rwmutex`, `semaphore`), as used in keys.
    pub const fn as_str(self) -> &'static str {
        match self {
            LockKind::Mutex => "mutex",
            LockKind::RwMutex => "rwmutex",
            LockKind::Semaphore => "semaphore",
        }
    }
}

impl fmt::Display for LockKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a lease shares its lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Excludes every other lease (a mutex holder, a writer).
    Exclusive,
    /// Shares with other shared leases (a reader, a semaphore permit set).
    Shared,
}

/// One lock: its name and kind. Backends store each key's lease set separately.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LockKey {
    name: Arc<str>,
    kind: LockKind,
}

impl LockKey {
    /// A key for `name` of `kind`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] when the name is empty or longer than [`MAX_NAME_LEN`] bytes.
    pub fn new(name: &str, kind: LockKind) -> Result<Self> {
        validate_name(name)?;
        Ok(LockKey {
            name: name.into(),
            kind,
        })
    }

    /// A key sharing `name`'s allocation.
    pub(crate) fn shared(name: &Arc<str>, kind: LockKind) -> Result<Self> {
        validate_name(name)?;
        Ok(LockKey {
            name: Arc::clone(name),
            kind,
        })
    }

    /// The lock's name, exactly as the user gave it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The lock's kind.
    pub fn kind(&self) -> LockKind {
        self.kind
    }
}

/// Checks the rules of names: non-empty UTF-8, at most [`MAX_NAME_LEN`] bytes.
///
/// # Errors
///
/// [`Error::InvalidArgument`] naming the rule that was broken.
pub fn validate_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::invalid_argument("lock name must not be empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(Error::invalid_argument(format!(
            "lock name is {} bytes long, over the limit of {MAX_NAME_LEN} bytes",
            name.len()
        )));
    }
    Ok(())
}

/// One holder of a lock, as returned by [`Guard::info`](crate::Guard::info) and
/// [`Locker::inspect`](crate::Locker::inspect).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct LockInfo {
    /// The lock's name.
    pub name: String,
    /// The lock's kind.
    pub kind: LockKind,
    /// The owner id of the holder's [`Locker`](crate::Locker).
    pub owner: String,
    /// The lease's fencing token.
    pub token: FencingToken,
    /// Exclusive (mutex, writer) or shared (reader, semaphore).
    pub mode: Mode,
    /// Permits held: the `n` of a semaphore acquisition, 1 otherwise.
    pub permits: u32,
    /// When the lease expires unless extended, by the backend's clock converted to this
    /// machine's wall clock.
    pub expires_at: SystemTime,
    /// The metadata given when the lock was acquired.
    pub metadata: Metadata,
}

impl LockInfo {
    /// Builds a `LockInfo`; backends use this (the struct is `#[non_exhaustive]`).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        key: &LockKey,
        owner: impl Into<String>,
        token: FencingToken,
        mode: Mode,
        permits: u32,
        expires_at: SystemTime,
        metadata: Metadata,
    ) -> Self {
        LockInfo {
            name: key.name().to_owned(),
            kind: key.kind(),
            owner: owner.into(),
            token,
            mode,
            permits,
            expires_at,
            metadata,
        }
    }
}
