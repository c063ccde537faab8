//! An in-process relay for the import transaction's connection, so that the
//! array-binding writer can put its requests on the wire itself.
//!
//! mysql_async sends a command only after the previous one's reply (its packet
//! reader and writer are private), so with its `exec_batch` the server waits
//! while the next request is built and sent. The relay sits between
//! mysql_async and the server and forwards every byte both ways; between two
//! of mysql_async's commands (when it waits for nothing) the writer borrows
//! the server's socket, sends several requests ahead of their replies, reads
//! every reply, and gives the socket back.
//!
//! ```text
//!  mysql_async ──► 127.0.0.1:ephemeral ──► relay task ──► server
//!                                          │
//!                   the writer ◄── lent ───┘ (between mysql_async's commands)
//! ```
//!
//! Only for plain TCP: TLS and compression end in mysql_async, and the bytes
//! the relay sees are then not the protocol's packets. The listener takes one
//! connection and closes; whoever connects goes through the server's own
//! authentication as anyone else.

use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// Bytes forwarded per read.
const FORWARD_BYTES: usize = 64 << 10;

/// The relay of one connection: forwards until either side closes, or the
/// relay is dropped.
#[derive(Debug)]
pub(super) struct Relay {
    address: SocketAddr,
    borrow: mpsc::Sender<oneshot::Sender<Lent>>,
    task: JoinHandle<()>,
}

/// The server's socket, lent between two of mysql_async's commands. Give it
/// back with [`Lent::give_back`]; dropped instead (the exchange on it failed
/// and where it stands is unknown), it ends the relay, and so the connection.
#[derive(Debug)]
pub(super) struct Lent {
    server: TcpStream,
    back: oneshot::Sender<TcpStream>,
}

impl Relay {
    /// Listens on an ephemeral port of 127.0.0.1 for the one connection to
    /// relay to `host`:`port`.
    pub(super) async fn start(host: &str, port: u16) -> io::Result<Relay> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let address = listener.local_addr()?;
        let (borrow, requests) = mpsc::channel(1);
        let server = (host.to_string(), port);
        let task = tokio::spawn(async move {
            let Ok((client, _)) = listener.accept().await else {
                return;
            };
            drop(listener);
            let Ok(server) = TcpStream::connect(server).await else {
                // The client sees its connection closed: mysql_async reports it.
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            forward(client, server, requests).await;
        });
        Ok(Relay {
            address,
            borrow,
            task,
        })
    }

    /// Where mysql_async connects.
    pub(super) fn address(&self) -> SocketAddr {
        self.address
    }

    /// The server's socket, once the relay holds it between two reads (call
    /// only while mysql_async waits for no reply). `None` if the relay ended.
    pub(super) async fn borrow(&self) -> Option<Lent> {
        let (lend, lent) = oneshot::channel();
        self.borrow.send(lend).await.ok()?;
        lent.await.ok()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Lent {
    /// The server's socket.
    pub(super) fn stream(&mut self) -> &mut TcpStream {
        &mut self.server
    }

    /// Hands the socket back to the relay, which forwards again.
    pub(super) fn give_back(self) {
        let _ = self.back.send(self.server);
    }
}

/// Copies bytes both ways until either side closes (or a lent socket is not
/// given back); lends the server's socket on request.
async fn forward(
    mut client: TcpStream,
    mut server: TcpStream,
    mut requests: mpsc::Receiver<oneshot::Sender<Lent>>,
) {
    let mut from_client = vec![0u8; FORWARD_BYTES];
    let mut from_server = vec![0u8; FORWARD_BYTES];
    loop {
        tokio::select! {
            read = client.read(&mut from_client) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => if server.write_all(&from_client[..n]).await.is_err() { return },
            },
            read = server.read(&mut from_server) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => if client.write_all(&from_server[..n]).await.is_err() { return },
            },
            request = requests.recv() => {
                let Some(lend) = request else { return };
                let (back, returned) = oneshot::channel();
                if let Err(Lent { server: kept, .. }) = lend.send(Lent { server, back }) {
                    server = kept;
                    continue;
                }
                match returned.await {
                    Ok(returned) => server = returned,
                    Err(_) => return,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that echoes every byte it reads.
    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buffer = [0u8; 1024];
            loop {
                match socket.read(&mut buffer).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => socket.write_all(&buffer[..n]).await.unwrap(),
                }
            }
        });
        address
    }

    #[tokio::test]
    async fn forwards_and_lends_the_server_socket() {
        let server = echo_server().await;
        let relay = Relay::start("127.0.0.1", server.port()).await.unwrap();
        let mut client = TcpStream::connect(relay.address()).await.unwrap();
        let mut reply = [0u8; 5];
        client.write_all(b"hello").await.unwrap();
        client.read_exact(&mut reply).await.unwrap();
        assert_eq!(&reply, b"hello");

        // Lent: the server's replies come to the borrower, not the client.
        let mut lent = relay.borrow().await.expect("the relay lends");
        lent.stream().write_all(b"ahead").await.unwrap();
        lent.stream().read_exact(&mut reply).await.unwrap();
        assert_eq!(&reply, b"ahead");
        lent.give_back();

        client.write_all(b"again").await.unwrap();
        client.read_exact(&mut reply).await.unwrap();
        assert_eq!(&reply, b"again");
    }

    #[tokio::test]
    async fn a_socket_not_given_back_ends_the_connection() {
        let server = echo_server().await;
        let relay = Relay::start("127.0.0.1", server.port()).await.unwrap();
        let mut client = TcpStream::connect(relay.address()).await.unwrap();
        client.write_all(b"x").await.unwrap();
        let mut reply = [0u8; 1];
        client.read_exact(&mut reply).await.unwrap();
        drop(relay.borrow().await.expect("the relay lends"));
        assert_eq!(client.read(&mut reply).await.unwrap(), 0, "closed");
        assert!(relay.borrow().await.is_none());
    }
}
