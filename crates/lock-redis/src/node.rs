//! One Redis instance: its multiplexed, reconnecting connection, bounded round trips, and its
//! pub/sub listener.

use crate::config::redact;
use crate::keys::Layout;
use futures_util::StreamExt;
use lock_core::redact::passwords;
use lock_core::{Error, Notifier, Result};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::io::tcp::{TcpSettings, socket2::TcpKeepalive};
use redis::{AsyncConnectionConfig, PushInfo, PushKind};
use redis::{Client, FromRedisValue, IntoConnectionInfo, ScriptInvocation};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// A failure of one instance: the instance's URL (password redacted) and what went wrong.
#[derive(Debug)]
pub(crate) struct NodeError {
    node: String,
    kind: NodeErrorKind,
}

#[derive(Debug)]
enum NodeErrorKind {
    Timeout(Duration),
    Redis(Box<dyn std::error::Error + Send + Sync>),
}

impl fmt::Display for NodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            NodeErrorKind::Timeout(t) => {
                write!(f, "redis node {} did not answer within {t:?}", self.node)
            }
            NodeErrorKind::Redis(_) => write!(f, "redis node {} failed", self.node),
        }
    }
}

impl std::error::Error for NodeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            NodeErrorKind::Timeout(_) => None,
            NodeErrorKind::Redis(e) => Some(&**e),
        }
    }
}

/// A client error's text with a password scrubbed out, standing in for the error when its text
/// held the password.
#[derive(Debug)]
struct Scrubbed(String);

impl fmt::Display for Scrubbed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Scrubbed {}

/// `text` with every one of `passwords` replaced by `***`.
fn scrub(mut text: String, passwords: &[String]) -> String {
    for p in passwords {
        text = text.replace(p.as_str(), "***");
    }
    text
}

/// The socket options of every connection to an instance (commands and pub/sub):
/// `TCP_NODELAY`, so that small requests sharing the multiplexed connection are not held back
/// by Nagle's algorithm behind an unacknowledged one; and keepalive probes after 30 s idle,
/// every 10 s, so that a half-open connection (a peer gone without a reset, a NAT or load
/// balancer that forgot the flow) is found and replaced, and idle flows are not forgotten.
fn tcp_settings() -> TcpSettings {
    TcpSettings::default().set_nodelay(true).set_keepalive(
        TcpKeepalive::new()
            .with_time(Duration::from_secs(30))
            .with_interval(Duration::from_secs(10)),
    )
}

/// One instance.
pub(crate) struct Node {
    /// The URL with its password redacted.
    pub(crate) url: String,
    /// The passwords the URL holds, to scrub them from client error texts.
    passwords: Vec<String>,
    client: Client,
    /// The same instance over RESP3, for the listener's push messages.
    push_client: Client,
    conn: ConnectionManager,
    timeout: Duration,
}

impl Node {
    /// Prepares the connection to `url` without connecting yet.
    pub(crate) fn new(url: &str, timeout: Duration, root_cert: Option<&[u8]>) -> Result<Node> {
        let url = url.trim();
        let redacted = redact(url).into_owned();
        let passwords = passwords(url);
        let clean = |e: redis::RedisError| scrub(e.to_string(), &passwords);
        let build = |info: redis::ConnectionInfo| match root_cert {
            Some(pem) if url.starts_with("rediss://") => Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.to_vec()),
                },
            ),
            _ => Client::open(info),
        };
        let opened = url.into_connection_info().and_then(|info| {
            let info = info.set_tcp_settings(tcp_settings());
            let settings = info
                .redis_settings()
                .clone()
                .set_protocol(redis::ProtocolVersion::RESP3);
            let resp3 = info.clone().set_redis_settings(settings);
            Ok((build(info)?, build(resp3)?))
        });
        let (client, push_client) = opened.map_err(|e| {
            Error::config(format!("redis url {redacted:?} is invalid: {}", clean(e)))
        })?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), config)
            .map_err(|e| Error::config(format!("redis url {redacted:?}: {}", clean(e))))?;
        Ok(Node {
            url: redacted,
            passwords,
            client,
            push_client,
            conn,
            timeout,
        })
    }

    pub(crate) fn error(&self, e: redis::RedisError) -> NodeError {
        let text = e.to_string();
        let scrubbed = scrub(text.clone(), &self.passwords);
        let source: Box<dyn std::error::Error + Send + Sync> = if scrubbed == text {
            Box::new(e)
        } else {
            Box::new(Scrubbed(scrubbed))
        };
        NodeError {
            node: self.url.clone(),
            kind: NodeErrorKind::Redis(source),
        }
    }

    fn timed_out(&self) -> NodeError {
        NodeError {
            node: self.url.clone(),
            kind: NodeErrorKind::Timeout(self.timeout),
        }
    }

    /// The error of a call still unanswered when its round ended, after `waited`.
    pub(crate) fn unanswered(&self, waited: Duration) -> NodeError {
        NodeError {
            node: self.url.clone(),
            kind: NodeErrorKind::Timeout(waited),
        }
    }

    /// Runs a script invocation, bounded by the timeout (both tries together). A connection
    /// found dropped (the server restarted, a proxy closed it) is replaced and the script sent
    /// once more: every script is safe to repeat (acquire returns the lease it granted, extend
    /// sets the same expiry; a repeated release reports "not held" only if the first one ran
    /// and its answer was lost with the connection).
    pub(crate) async fn run<T: FromRedisValue>(
        &self,
        invocation: &ScriptInvocation<'_>,
    ) -> Result<T, NodeError> {
        let attempt = async {
            let mut conn = self.conn.clone();
            match invocation.invoke_async(&mut conn).await {
                Err(e) if e.is_connection_dropped() || e.is_io_error() => {
                    invocation.invoke_async(&mut conn).await
                }
                result => result,
            }
        };
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(self.error(e)),
            Err(_) => Err(self.timed_out()),
        }
    }

    /// One `SCAN cursor MATCH pattern COUNT count`, bounded by the timeout (both tries
    /// together; a read, so it is sent again on a dropped connection like the scripts): the
    /// next cursor and the keys, those that are not UTF-8 left out (no key of this library is).
    pub(crate) async fn scan(
        &self,
        cursor: u64,
        pattern: &str,
        count: usize,
    ) -> Result<(u64, Vec<String>), NodeError> {
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(count);
        let attempt = async {
            let mut conn = self.conn.clone();
            match cmd.query_async::<redis::Value>(&mut conn).await {
                Err(e) if e.is_connection_dropped() || e.is_io_error() => {
                    cmd.query_async::<redis::Value>(&mut conn).await
                }
                result => result,
            }
        };
        let reply = match tokio::time::timeout(self.timeout, attempt).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(e)) => return Err(self.error(e)),
            Err(_) => return Err(self.timed_out()),
        };
        parse_scan(&reply).ok_or_else(|| {
            self.error(redis::RedisError::from((
                redis::ErrorKind::UnexpectedReturnType,
                "unexpected SCAN reply",
                format!("{reply:?}"),
            )))
        })
    }

    /// A PING, bounded by the timeout.
    pub(crate) async fn ping(&self) -> Result<(), NodeError> {
        let mut conn = self.conn.clone();
        let cmd = redis::cmd("PING");
        let ping = cmd.query_async::<String>(&mut conn);
        match tokio::time::timeout(self.timeout, ping).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(self.error(e)),
            Err(_) => Err(self.timed_out()),
        }
    }

    /// Starts the listener: one pub/sub connection that pattern-subscribes to every change
    /// channel under the prefix and signals `notifier`; it reconnects after a failure and then
    /// signals every waiter (messages may have been lost meanwhile). The connection is
    /// health-checked with a PING every `timeout` (bounded by `timeout`): one that stays open
    /// but stopped answering (half-open, a proxy that forgot it) is replaced within about twice
    /// the timeout. Failures emit a `tracing` warning. The returned receiver turns true once the
    /// first subscription is acknowledged.
    ///
    /// The connection speaks RESP3 where the server can (Redis 6 and later): its messages are
    /// pushed to a sender that signals `notifier` from inside the connection's driver task, so a
    /// notification reaches the waiter without a hop through this listener's task (P4 b). A
    /// server without RESP3 (`HELLO` unknown) gets a RESP2 pub/sub connection, whose messages
    /// this task forwards.
    pub(crate) fn listen(
        &self,
        layout: Layout,
        notifier: Notifier,
    ) -> (JoinHandle<()>, tokio::sync::watch::Receiver<bool>) {
        let client = self.client.clone();
        let push_client = self.push_client.clone();
        let timeout = self.timeout;
        let url = self.url.clone();
        let passwords = self.passwords.clone();
        let (subscribed, ready) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let pattern = layout.pattern();
            let mut pause = Duration::from_millis(100);
            let check_every = timeout.max(Duration::from_millis(100));
            let mut resp3 = true;
            loop {
                let why = if resp3 {
                    let closed = Arc::new(tokio::sync::Notify::new());
                    let sender = push_sender(layout.clone(), notifier.clone(), closed.clone());
                    let config = AsyncConnectionConfig::new()
                        .set_connection_timeout(Some(timeout))
                        .set_response_timeout(Some(timeout))
                        .set_push_sender(sender);
                    let connected = tokio::time::timeout(timeout, async {
                        let mut conn = push_client
                            .get_multiplexed_async_connection_with_config(&config)
                            .await?;
                        conn.psubscribe(&pattern).await?;
                        Ok::<_, redis::RedisError>(conn)
                    })
                    .await;
                    match connected {
                        Ok(Ok(mut conn)) => {
                            pause = Duration::from_millis(100);
                            subscribed.send_replace(true);
                            notifier.notify_all();
                            let mut check = tokio::time::interval(check_every);
                            check.tick().await;
                            Some(loop {
                                tokio::select! {
                                    _ = closed.notified() => {
                                        break "the connection closed".to_owned();
                                    }
                                    _ = check.tick() => {
                                        let ping = redis::cmd("PING");
                                        let answer = ping.query_async::<redis::Value>(&mut conn);
                                        match tokio::time::timeout(timeout, answer).await {
                                            Ok(Ok(_)) => {}
                                            Ok(Err(e)) => break scrub(e.to_string(), &passwords),
                                            Err(_) => break format!("no answer to PING within {timeout:?}"),
                                        }
                                    }
                                }
                            })
                        }
                        Ok(Err(e)) if no_resp3(&e) => {
                            resp3 = false;
                            continue;
                        }
                        Ok(Err(e)) => {
                            tracing::warn!(
                                node = %url,
                                error = %scrub(e.to_string(), &passwords),
                                "lock-redis: cannot subscribe to change notifications; retrying"
                            );
                            None
                        }
                        Err(_) => {
                            tracing::warn!(
                                node = %url,
                                "lock-redis: subscribing to change notifications timed out; retrying"
                            );
                            None
                        }
                    }
                } else {
                    resp2_session(
                        &client,
                        &pattern,
                        &layout,
                        &notifier,
                        &subscribed,
                        timeout,
                        check_every,
                        &url,
                        &passwords,
                        &mut pause,
                    )
                    .await
                };
                if let Some(why) = why {
                    tracing::warn!(
                        node = %url,
                        reason = %why,
                        "lock-redis: the pub/sub connection failed; reconnecting"
                    );
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
        });
        (task, ready)
    }
}

/// A `SCAN` reply: `[cursor, [key, ...]]`.
fn parse_scan(reply: &redis::Value) -> Option<(u64, Vec<String>)> {
    let redis::Value::Array(items) = reply else {
        return None;
    };
    let [cursor, keys] = items.as_slice() else {
        return None;
    };
    let cursor = match cursor {
        redis::Value::BulkString(bytes) => std::str::from_utf8(bytes).ok()?.parse().ok()?,
        redis::Value::SimpleString(s) => s.parse().ok()?,
        redis::Value::Int(i) => u64::try_from(*i).ok()?,
        _ => return None,
    };
    let redis::Value::Array(keys) = keys else {
        return None;
    };
    let keys = keys
        .iter()
        .filter_map(|key| match key {
            redis::Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
            redis::Value::SimpleString(s) => Some(s.clone()),
            _ => None,
        })
        .collect();
    Some((cursor, keys))
}

/// True when `e` says the server does not speak RESP3 (no `HELLO`: Redis 5).
fn no_resp3(e: &redis::RedisError) -> bool {
    e.kind() == redis::ErrorKind::RESP3NotSupported || e.to_string().contains("HELLO")
}

/// The push sender of the listener's RESP3 connection, run inside the connection's driver
/// task: a pattern message signals the waiters of its lock; the connection's end wakes the
/// listener through `closed`.
fn push_sender(
    layout: Layout,
    notifier: Notifier,
    closed: Arc<tokio::sync::Notify>,
) -> impl Fn(PushInfo) -> Result<(), std::convert::Infallible> + Send + Sync + 'static {
    move |info: PushInfo| {
        match info.kind {
            PushKind::PMessage | PushKind::Message => {
                let channel = match info.kind {
                    PushKind::PMessage => info.data.get(1),
                    _ => info.data.first(),
                };
                if let Some(redis::Value::BulkString(bytes)) = channel
                    && let Ok(channel) = std::str::from_utf8(bytes)
                    && let Some(key) = layout.parse_channel(channel)
                {
                    notifier.notify(&key);
                }
            }
            PushKind::Disconnection => closed.notify_one(),
            _ => {}
        }
        Ok(())
    }
}

/// One RESP2 pub/sub session of the listener (a server without RESP3): subscribes, forwards
/// messages to `notifier` and PINGs the connection, until it fails. Returns why it ended, or
/// `None` when it could not subscribe (already reported).
#[allow(clippy::too_many_arguments)]
async fn resp2_session(
    client: &Client,
    pattern: &str,
    layout: &Layout,
    notifier: &Notifier,
    subscribed: &tokio::sync::watch::Sender<bool>,
    timeout: Duration,
    check_every: Duration,
    url: &str,
    passwords: &[String],
    pause: &mut Duration,
) -> Option<String> {
    let connected = tokio::time::timeout(timeout, async {
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.psubscribe(pattern).await?;
        Ok::<_, redis::RedisError>(pubsub)
    })
    .await;
    match connected {
        Ok(Ok(pubsub)) => {
            *pause = Duration::from_millis(100);
            subscribed.send_replace(true);
            // Changes made while we were not listening went unheard.
            notifier.notify_all();
            let (mut sink, mut messages) = pubsub.split();
            let mut check = tokio::time::interval(check_every);
            check.tick().await;
            Some(loop {
                tokio::select! {
                    message = messages.next() => match message {
                        Some(message) => {
                            if let Some(key) = layout.parse_channel(message.get_channel_name()) {
                                notifier.notify(&key);
                            }
                        }
                        None => break "the connection closed".to_owned(),
                    },
                    _ = check.tick() => {
                        match tokio::time::timeout(timeout, sink.ping::<redis::Value>()).await {
                            Ok(Ok(_)) => {}
                            Ok(Err(e)) => break scrub(e.to_string(), passwords),
                            Err(_) => break format!("no answer to PING within {timeout:?}"),
                        }
                    }
                }
            })
        }
        Ok(Err(e)) => {
            tracing::warn!(
                node = %url,
                error = %scrub(e.to_string(), passwords),
                "lock-redis: cannot subscribe to change notifications; retrying"
            );
            None
        }
        Err(_) => {
            tracing::warn!(
                node = %url,
                "lock-redis: subscribing to change notifications timed out; retrying"
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Review finding 12: a percent-encoded password is scrubbed in its decoded form too.
    #[test]
    fn percent_encoded_passwords_are_scrubbed() {
        let found = passwords("redis://app:p%40ss%2Cw@127.0.0.1:1/0");
        let text = scrub("auth failed for p@ss,w and p%40ss%2Cw".to_owned(), &found);
        assert_eq!(text, "auth failed for *** and ***");
    }

    /// Review finding 6: neither the node's name nor any level of its errors shows a password,
    /// whether it sits in the user information (holding a raw `,` or `'`) or in `?pass=` (how
    /// redis-rs takes the password of a Unix-socket URL).
    #[tokio::test]
    async fn node_errors_hide_every_password() {
        for (url, secret) in [
            (
                "redis+unix:///nonexistent/redis.sock?db=0&pass=s3cret",
                "s3cret",
            ),
            ("redis://app:pa,ss@127.0.0.1:1/0", "pa,ss"),
            ("redis://app:it's@127.0.0.1:1/0", "it's"),
            ("redis://app:p%40ss%2Cw@127.0.0.1:1/0", "p%40ss%2Cw"),
        ] {
            let node = Node::new(url, Duration::from_millis(500), None).unwrap();
            assert!(!node.url.contains(secret), "{}", node.url);
            let err = node.ping().await.unwrap_err();
            let mut text = format!("{err} {err:?}");
            let mut source = std::error::Error::source(&err);
            while let Some(e) = source {
                text.push_str(&format!(" {e} {e:?}"));
                source = e.source();
            }
            assert!(!text.contains(secret), "{url}: {text}");
            assert!(text.contains("***"), "{url}: {text}");
        }
    }
}
