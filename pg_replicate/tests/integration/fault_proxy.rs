//! A TCP proxy between the pipeline and Postgres that cuts or stalls the
//! connections through it on command, for the fault tests.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the connections through the proxy suffer.
#[derive(Default)]
struct Control {
    /// Bumped by `cut` and `stall_existing`; a connection remembers the
    /// generation it was opened in.
    generation: AtomicU64,
    /// Connections opened before this generation are closed.
    cut_before: AtomicU64,
    /// Connections opened before this generation pass nothing on.
    stalled_before: AtomicU64,
}

/// A proxy on a free port of 127.0.0.1; stops when dropped.
pub struct FaultProxy {
    port: u16,
    control: Arc<Control>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Forwards connections to `127.0.0.1:upstream_port`.
    pub async fn start(upstream_port: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let port = listener.local_addr().unwrap().port();
        let control = Arc::new(Control::default());
        let shared = control.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let control = shared.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream_port)).await else {
                        return;
                    };
                    let born = control.generation.load(Ordering::SeqCst);
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    tokio::select! {
                        _ = pump(client_read, server_write, &control, born) => {}
                        _ = pump(server_read, client_write, &control, born) => {}
                    }
                });
            }
        });
        Self {
            port,
            control,
            task,
        }
    }

    /// The port to connect to instead of Postgres'.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Closes every open connection; new ones pass.
    pub fn cut(&self) {
        let next = self.control.generation.fetch_add(1, Ordering::SeqCst) + 1;
        self.control.cut_before.store(next, Ordering::SeqCst);
    }

    /// Every open connection stops passing bytes on, and stays open; new
    /// ones pass.
    pub fn stall_existing(&self) {
        let next = self.control.generation.fetch_add(1, Ordering::SeqCst) + 1;
        self.control.stalled_before.store(next, Ordering::SeqCst);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
        self.cut();
    }
}

/// Copies `from` to `to` while the connection is neither cut nor stalled.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    control: &Control,
    born: u64,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if born < control.cut_before.load(Ordering::SeqCst) {
            return;
        }
        if born < control.stalled_before.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        match tokio::time::timeout(Duration::from_millis(20), from.read(&mut buf)).await {
            Err(_) => continue,
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(n)) => {
                if to.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}
