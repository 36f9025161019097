//! A TCP proxy on loopback that a fault test can cut off and restore, to put a client on the
//! wrong side of a network partition while the server runs on.

use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Forwards connections from its own loopback port to `target`. While cut, every byte is held
/// back (as in a partition: nothing arrives, nothing is refused); [`restore`](Self::restore)
/// closes the connections that were cut, and new ones are forwarded again.
pub struct TcpProxy {
    addr: SocketAddr,
    state: Arc<watch::Sender<Link>>,
    /// The connections (by accept order) that were blackholed.
    holes: Arc<watch::Sender<Vec<usize>>>,
    accept: JoinHandle<()>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Link {
    Up { generation: u64 },
    Cut { generation: u64 },
}

impl Link {
    fn generation(self) -> u64 {
        match self {
            Link::Up { generation } | Link::Cut { generation } => generation,
        }
    }
}

impl TcpProxy {
    /// Starts a proxy to `target` on a free loopback port.
    ///
    /// # Errors
    ///
    /// When no loopback port can be bound.
    pub async fn start(target: SocketAddr) -> std::io::Result<TcpProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(watch::channel(Link::Up { generation: 0 }).0);
        let holes = Arc::new(watch::channel(Vec::new()).0);
        let accept = tokio::spawn(accept_loop(listener, target, state.clone(), holes.clone()));
        Ok(TcpProxy {
            addr,
            state,
            holes,
            accept,
        })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Holds back every byte in both directions, on existing and new connections.
    pub fn cut(&self) {
        self.state.send_modify(|link| {
            *link = Link::Cut {
                generation: link.generation(),
            }
        });
    }

    /// Closes the connections that were cut and forwards again.
    pub fn restore(&self) {
        self.state.send_modify(|link| {
            *link = Link::Up {
                generation: link.generation() + 1,
            }
        });
    }

    /// Blackholes one connection, the `index`-th accepted (0 for the first): from now on
    /// nothing crosses it in either direction, and it stays open, as a connection whose peer or
    /// middlebox lost the flow without a reset (half-open). The other connections, and new
    /// ones, are forwarded as before. [`restore`](Self::restore) or dropping the proxy closes
    /// it.
    pub fn blackhole(&self, index: usize) {
        self.holes.send_modify(|holes| holes.push(index));
    }

    /// True while cut.
    pub fn is_cut(&self) -> bool {
        matches!(*self.state.borrow(), Link::Cut { .. })
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accept.abort();
        // Wakes every connection task so it closes.
        self.state.send_modify(|link| {
            *link = Link::Up {
                generation: link.generation() + 1,
            }
        });
    }
}

async fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    state: Arc<watch::Sender<Link>>,
    holes: Arc<watch::Sender<Vec<usize>>>,
) {
    let mut index = 0;
    while let Ok((client, _)) = listener.accept().await {
        let rx = state.subscribe();
        tokio::spawn(forward(client, target, rx, holes.subscribe(), index));
        index += 1;
    }
}

/// Forwards one connection (the `index`-th) until either side closes, the link is cut or the
/// connection blackholed (then waits for the restore and closes), or the proxy is dropped.
async fn forward(
    mut client: TcpStream,
    target: SocketAddr,
    mut rx: watch::Receiver<Link>,
    mut holes: watch::Receiver<Vec<usize>>,
    index: usize,
) {
    let generation = rx.borrow().generation();
    let cut = |link: &Link| matches!(link, Link::Cut { .. }) || link.generation() != generation;
    if cut(&rx.borrow_and_update()) {
        let _ = rx.wait_for(|link| matches!(link, Link::Up { .. })).await;
        return;
    }
    let Ok(mut server) = TcpStream::connect(target).await else {
        return;
    };
    let partitioned = tokio::select! {
        _ = copy_bidirectional(&mut client, &mut server) => false,
        _ = rx.wait_for(|link| cut(link)) => true,
        _ = holes.wait_for(|holes| holes.contains(&index)) => true,
    };
    if partitioned {
        // Hold both sockets open and silent until the link is restored, then close them.
        let _ = rx
            .wait_for(|link| matches!(link, Link::Up { .. }) && link.generation() != generation)
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = socket.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    async fn roundtrip(stream: &mut TcpStream) -> bool {
        if stream.write_all(b"ping").await.is_err() {
            return false;
        }
        let mut buf = [0u8; 4];
        matches!(
            tokio::time::timeout(Duration::from_millis(300), stream.read_exact(&mut buf)).await,
            Ok(Ok(_))
        ) && &buf == b"ping"
    }

    #[tokio::test]
    async fn blackhole_silences_one_connection_and_keeps_it_open() {
        let proxy = TcpProxy::start(echo_server().await).await.unwrap();
        let mut first = TcpStream::connect(proxy.addr()).await.unwrap();
        let mut second = TcpStream::connect(proxy.addr()).await.unwrap();
        assert!(roundtrip(&mut first).await);
        assert!(roundtrip(&mut second).await);
        proxy.blackhole(1);
        assert!(roundtrip(&mut first).await, "the other connection stopped");
        assert!(!roundtrip(&mut second).await, "bytes crossed a blackhole");
        let mut buf = [0u8; 1];
        let open = tokio::time::timeout(Duration::from_millis(300), second.read(&mut buf)).await;
        assert!(
            open.is_err(),
            "the blackholed connection was closed: {open:?}"
        );
        let mut third = TcpStream::connect(proxy.addr()).await.unwrap();
        assert!(
            roundtrip(&mut third).await,
            "a new connection is not forwarded"
        );
    }

    #[tokio::test]
    async fn cut_holds_bytes_and_restore_reconnects() {
        let proxy = TcpProxy::start(echo_server().await).await.unwrap();
        let mut first = TcpStream::connect(proxy.addr()).await.unwrap();
        assert!(roundtrip(&mut first).await);
        proxy.cut();
        assert!(proxy.is_cut());
        assert!(!roundtrip(&mut first).await, "bytes crossed a cut link");
        let mut during = TcpStream::connect(proxy.addr()).await.unwrap();
        assert!(
            !roundtrip(&mut during).await,
            "a new connection crossed a cut link"
        );
        proxy.restore();
        let mut after = TcpStream::connect(proxy.addr()).await.unwrap();
        assert!(roundtrip(&mut after).await);
        let mut buf = [0u8; 1];
        let closed = tokio::time::timeout(Duration::from_secs(2), first.read(&mut buf)).await;
        assert!(
            matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
            "cut connection not closed on restore"
        );
    }
}
