//! [`Backend::list`](lock_core::Backend::list) on Redis: `SCAN` through the keys of the names
//! under a prefix, a bounded number of calls per page, and each name found read with
//! `inspect`.
//!
//! A name's keys carry its hex in the hash tag (see `keys.rs`), so the names under a prefix
//! are the keys matching `<prefix>{<hex of the name prefix>*`. Of those, a name is listed when
//! its lease set (the hash, which exists while it has leases or claims) or its mutex fast-path
//! lease exists; the token counters that idle names leave behind for a minute are passed over.
//!
//! The position is a node, its `SCAN` cursor, how many nodes were scanned to the end, and the
//! names of the last batch that did not fit in the page (a `SCAN` batch cannot be cut and
//! resumed in the middle: the same cursor may answer other keys the next time). With Redlock,
//! a name held by a quorum is on at least a quorum of the instances, so scanning
//! `N - quorum + 1` of them to the end finds it; a node that fails is passed over while enough
//! are left.

use crate::backend::Redis;
use crate::keys::{hex, unhex};
use futures_util::{StreamExt, TryStreamExt};
use lock_core::{Error, ListCursor, ListRequest, LockPage, MAX_NAME_LEN, Result};
use std::collections::BTreeSet;

/// The most `SCAN` calls of one page.
pub(crate) const SCANS_PER_PAGE: usize = 4;

/// The `COUNT` of the `SCAN` calls of a page of `limit` names: ten keys per name asked for,
/// between 100 and 1000.
pub(crate) fn scan_count(limit: usize) -> usize {
    limit.saturating_mul(10).clamp(100, 1000)
}

/// Where a listing goes on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Position {
    /// The node being scanned.
    node: usize,
    /// Its `SCAN` cursor (0: from the start).
    scan: u64,
    /// How many nodes were scanned to the end.
    done: usize,
    /// The hex names of the last batch that did not fit in the previous page, sorted.
    pending: Vec<String>,
}

/// The version tag of cursors, so that a cursor of another format is refused.
const TAG: &str = "r1";

impl Position {
    /// `r1:<node>:<scan cursor>:<nodes done>:<hex name>,<hex name>...`
    fn encode(&self) -> ListCursor {
        ListCursor::new(format!(
            "{TAG}:{}:{}:{}:{}",
            self.node,
            self.scan,
            self.done,
            self.pending.join(",")
        ))
    }

    /// Reads a cursor of [`encode`](Self::encode) for a backend of `nodes` instances that
    /// scans `needed` of them.
    fn decode(cursor: &str, nodes: usize, needed: usize) -> Result<Position> {
        let bad = || {
            Error::invalid_argument(format!(
                "list cursor {:?} was not made by the redis backend (or by one with other \
                 instances)",
                shorten(cursor)
            ))
        };
        let mut parts = cursor.splitn(5, ':');
        if parts.next() != Some(TAG) {
            return Err(bad());
        }
        let mut number = || -> Result<u64> {
            let part = parts.next().ok_or_else(bad)?;
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            part.parse().map_err(|_| bad())
        };
        let node = usize::try_from(number()?).map_err(|_| bad())?;
        let scan = number()?;
        let done = usize::try_from(number()?).map_err(|_| bad())?;
        let pending = parts.next().ok_or_else(bad)?;
        let pending: Vec<String> = if pending.is_empty() {
            Vec::new()
        } else {
            pending.split(',').map(str::to_owned).collect()
        };
        // Every pending name is a name: hex of at most MAX_NAME_LEN bytes of UTF-8.
        let names_ok = pending
            .iter()
            .all(|h| h.len() <= 2 * MAX_NAME_LEN && unhex(h).is_some_and(|n| !n.is_empty()));
        // Scanning goes on at a node below `nodes`; once `needed` nodes were scanned, only
        // names of the last batch are left.
        let scanning = done < needed && node < nodes;
        let draining = done == needed && node <= nodes && !pending.is_empty();
        if !(scanning || draining) || done > node || !names_ok {
            return Err(bad());
        }
        Ok(Position {
            node,
            scan,
            done,
            pending,
        })
    }
}

/// The start of a text, for an error message.
fn shorten(text: &str) -> String {
    match text.char_indices().nth(64) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text.to_owned(),
    }
}

impl Redis {
    /// One page of [`Backend::list`](lock_core::Backend::list): see the module docs.
    pub(crate) async fn list_page(&self, request: &ListRequest) -> Result<LockPage> {
        let n = self.node_count();
        let needed = self.list_needed();
        let mut position = match &request.after {
            Some(cursor) => Position::decode(cursor.as_str(), n, needed)?,
            None => Position::default(),
        };
        let hex_prefix = hex(&request.prefix);
        // A cursor of another prefix holds names outside this one.
        position.pending.retain(|h| h.starts_with(&hex_prefix));
        let pattern = self.layout().list_pattern(&hex_prefix);
        let count = scan_count(request.limit);

        // The names of this page, as hex (whose order is the names' byte order).
        let mut names: BTreeSet<String> = BTreeSet::new();
        let take = position.pending.len().min(request.limit);
        names.extend(position.pending.drain(..take));
        let mut scans = 0;
        while names.len() < request.limit
            && position.pending.is_empty()
            && position.done < needed
            && scans < SCANS_PER_PAGE
        {
            scans += 1;
            match self
                .node(position.node)
                .scan(position.scan, &pattern, count)
                .await
            {
                Ok((next, keys)) => {
                    let found: BTreeSet<&str> = keys
                        .iter()
                        .filter_map(|key| self.layout().listed_hex(key))
                        .filter(|h| h.starts_with(&hex_prefix) && !names.contains(*h))
                        .filter(|h| h.len() <= 2 * MAX_NAME_LEN && unhex(h).is_some())
                        .collect();
                    let room = request.limit - names.len();
                    let mut found = found.into_iter().map(str::to_owned);
                    names.extend(found.by_ref().take(room));
                    position.pending = found.collect();
                    position.scan = next;
                    if next == 0 {
                        position.done += 1;
                        position.node += 1;
                    }
                }
                Err(e) => {
                    // With Redlock, a node that fails is passed over while enough nodes are
                    // left to scan; the page ends here (the failure may have taken the whole
                    // round-trip timeout).
                    if n - (position.node + 1) < needed - position.done {
                        return Err(self.list_unavailable(e));
                    }
                    position.node += 1;
                    position.scan = 0;
                    break;
                }
            }
        }
        // All at once: with Redlock each inspection waits for every instance that answers
        // within the timeout, so a slow instance costs one timeout per page, not per name.
        let in_flight = names.len().max(1);
        let holders: Vec<Vec<lock_core::LockInfo>> = futures_util::stream::iter(names)
            .map(|name_hex| async move {
                match unhex(&name_hex) {
                    Some(name) => lock_core::Backend::inspect(self, &name).await,
                    None => Ok(Vec::new()),
                }
            })
            .buffered(in_flight)
            .try_collect()
            .await?;
        let finished = position.pending.is_empty() && position.done >= needed;
        let next = (!finished).then(|| position.encode());
        Ok(LockPage::new(holders.into_iter().flatten().collect(), next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip() {
        for position in [
            Position::default(),
            Position {
                node: 2,
                scan: u64::MAX,
                done: 1,
                pending: vec!["61".into(), "6162".into()],
            },
            Position {
                node: 3,
                scan: 0,
                done: 2,
                pending: vec!["61".into()],
            },
        ] {
            let cursor = position.encode();
            assert_eq!(Position::decode(cursor.as_str(), 3, 2).unwrap(), position);
        }
    }

    #[test]
    fn foreign_cursors_are_invalid_arguments() {
        for cursor in [
            "",
            "not a cursor",
            "r1:0:0:0",
            "r1:3:0:0:",
            "r1:1:0:2:",
            "r1:0:0:1:",
            "r1:3:0:2:",
            "r1:4:0:2:61",
            "r1:3:0:1:61",
            "r1:0:-1:0:",
            "r1:0:+1:0:",
            "r1:0:99999999999999999999999:0:",
            "r1:0:0:0:zz",
            "r1:0:0:0:616",
            "r1:0:0:0:,",
            "r1:0:0:0:ff",
            "r2:0:0:0:",
            "\u{0}\u{ffff}",
        ] {
            let err = Position::decode(cursor, 3, 2).unwrap_err();
            assert!(matches!(err, Error::InvalidArgument { .. }), "{cursor:?}");
        }
        assert!(Position::decode("r1:0:0:0:", 1, 1).is_ok());
    }

    #[test]
    fn scan_counts_are_bounded() {
        assert_eq!(scan_count(1), 100);
        assert_eq!(scan_count(50), 500);
        assert_eq!(scan_count(1000), 1000);
        assert_eq!(scan_count(usize::MAX), 1000);
    }
}
