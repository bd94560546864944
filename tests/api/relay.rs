//! A TCP relay the test owns, in front of a real server (PostgreSQL, Redis, RabbitMQ), that
//! can make it unreachable in the two ways a dependency fails:
//! * [`Relay::freeze`]: a hung server. Every connection stays open and nothing is forwarded
//!   either way (what it already read is held back); new connections are accepted and
//!   hang too. [`Relay::thaw`] forwards again, held bytes first, as a resumed process would.
//! * [`Relay::cut`]: a dead server. Every open connection is closed and new ones are
//!   refused (accepted and dropped) until [`Relay::restore`].

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Mode {
    frozen: bool,
    /// Refusing connections (cut and not yet restored).
    refusing: bool,
    /// Bumped by every cut: a link made before it ends.
    cuts: u64,
}

pub struct Relay {
    /// `127.0.0.1:port` of the relay.
    pub addr: String,
    mode: watch::Sender<Mode>,
}

impl Relay {
    /// A relay to `127.0.0.1:target`.
    pub async fn start(target: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a relay");
        let addr = listener.local_addr().expect("bound").to_string();
        let (mode, _) = watch::channel(Mode {
            frozen: false,
            refusing: false,
            cuts: 0,
        });
        let modes = mode.clone();
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let now = *modes.borrow();
                if now.refusing {
                    continue; // dropped: closed at once
                }
                let state = modes.subscribe();
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(("127.0.0.1", target)).await else {
                        return;
                    };
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    let (ir, iw) = inbound.into_split();
                    let (or, ow) = outbound.into_split();
                    tokio::join!(
                        pump(ir, ow, state.clone(), now.cuts),
                        pump(or, iw, state, now.cuts)
                    );
                });
            }
        });
        Self { addr, mode }
    }

    pub async fn redis() -> Self {
        Self::start(6379).await
    }

    pub async fn postgres() -> Self {
        Self::start(5432).await
    }

    pub async fn rabbitmq() -> Self {
        Self::start(5672).await
    }

    /// `REDIS_URL` through the relay.
    pub fn redis_url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    pub fn freeze(&self) {
        self.mode.send_modify(|m| m.frozen = true);
    }

    pub fn thaw(&self) {
        self.mode.send_modify(|m| m.frozen = false);
    }

    pub fn cut(&self) {
        self.mode.send_modify(|m| {
            m.refusing = true;
            m.cuts += 1;
        });
    }

    pub fn restore(&self) {
        self.mode.send_modify(|m| {
            m.refusing = false;
            m.frozen = false;
        });
    }
}

/// Copies one direction of a link while it is not frozen; ends (closing its half) when either
/// side closes or a cut comes after the link was made.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut state: watch::Receiver<Mode>,
    born: u64,
) {
    let mut buf = vec![0u8; 16 * 1024];
    let live = |m: &Mode| m.cuts == born;
    loop {
        // Neither read nor write while frozen: the peer's bytes wait in the kernel, as they
        // would for a stopped process.
        let Ok(m) = state.wait_for(|m| !m.frozen || !live(m)).await.map(|m| *m) else {
            return;
        };
        if !live(&m) {
            return;
        }
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            _ = state.changed() => continue,
        };
        let Ok(m) = state.wait_for(|m| !m.frozen || !live(m)).await.map(|m| *m) else {
            return;
        };
        if !live(&m) || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
