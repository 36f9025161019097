//! Listing the locks that are held: [`Locker::list`](crate::Locker::list), one bounded page
//! at a time.

use crate::{Error, LockInfo, MAX_NAME_LEN, Result};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The most lock names one page may ask for.
pub const MAX_LIST_LIMIT: usize = 1000;

/// The page size of [`ListRequest::new`].
pub const DEFAULT_LIST_LIMIT: usize = 100;

/// Where a listing goes on: returned in [`LockPage::next`], given back in
/// [`ListRequest::after`]. Opaque: its content is the backend's (a name, a scan position) and
/// it is only meaningful to the same backend and prefix. It serializes as a string, so a
/// command-line tool can print it and take it back.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ListCursor(String);

impl ListCursor {
    /// Wraps a backend's position. Backends make cursors; users pass them back.
    pub fn new(position: impl Into<String>) -> Self {
        ListCursor(position.into())
    }

    /// The backend's position, as the backend wrote it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ListCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What [`Locker::list`](crate::Locker::list) asks for: the held locks whose names start with
/// `prefix`, at most `limit` names per page, from `after` on.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListRequest {
    /// Only names that start with this (byte-wise); empty lists every name.
    pub prefix: String,
    /// The most lock names in the page (each with all its holders, of every kind).
    pub limit: usize,
    /// Where the previous page ended; `None` starts at the beginning.
    pub after: Option<ListCursor>,
}

impl ListRequest {
    /// The first page of the locks under `prefix`, [`DEFAULT_LIST_LIMIT`] names long.
    pub fn new(prefix: impl Into<String>) -> Self {
        ListRequest {
            prefix: prefix.into(),
            limit: DEFAULT_LIST_LIMIT,
            after: None,
        }
    }

    /// Sets the most lock names in the page (1 to [`MAX_LIST_LIMIT`]).
    #[must_use]
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    /// Continues after a previous page.
    #[must_use]
    pub fn after(mut self, cursor: Option<ListCursor>) -> Self {
        self.after = cursor;
        self
    }

    /// Checks the request's bounds.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for a limit of 0 or over [`MAX_LIST_LIMIT`], or a prefix
    /// longer than [`MAX_NAME_LEN`].
    pub fn validate(&self) -> Result<()> {
        if self.limit == 0 || self.limit > MAX_LIST_LIMIT {
            return Err(Error::invalid_argument(format!(
                "list limit is {}, it must be 1 to {MAX_LIST_LIMIT}",
                self.limit
            )));
        }
        if self.prefix.len() > MAX_NAME_LEN {
            return Err(Error::invalid_argument(format!(
                "list prefix is {} bytes long, over the limit of {MAX_NAME_LEN} bytes",
                self.prefix.len()
            )));
        }
        Ok(())
    }
}

/// One page of [`Locker::list`](crate::Locker::list).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub struct LockPage {
    /// The valid leases of the page's locks, as [`Locker::inspect`](crate::Locker::inspect)
    /// reports them, grouped by name (every holder of a name is in the same page).
    pub locks: Vec<LockInfo>,
    /// Where the next page starts; `None` when the listing is complete. A page may hold fewer
    /// names than the limit (even none) while `next` is set: each call does bounded work.
    pub next: Option<ListCursor>,
}

impl LockPage {
    /// Builds a page; backends use this (the struct is `#[non_exhaustive]`).
    pub fn new(locks: Vec<LockInfo>, next: Option<ListCursor>) -> Self {
        LockPage { locks, next }
    }
}
