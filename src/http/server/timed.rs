//! Deadlines on a connection while it has no request in hand. hyper 1 has one such timeout,
//! `header_read_timeout`, and it starts when the previous response ends, so it is the idle
//! timeout as well (hyperium/hyper#2355): a separate idle timeout needs this wrapper.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// What the service tells the stream: whether a request is in hand, and since when not.
pub(super) struct Activity {
    origin: Instant,
    busy: AtomicBool,
    /// Responses ready so far: a request may start and end between two looks of the stream.
    done: AtomicU64,
    /// When the last response was ready, in µs after `origin`.
    idle_since: AtomicU64,
}

impl Activity {
    pub(super) fn new() -> Self {
        Self {
            origin: Instant::now(),
            busy: AtomicBool::new(false),
            done: AtomicU64::new(0),
            idle_since: AtomicU64::new(0),
        }
    }

    /// A request's head is complete: no deadline until its response is ready.
    pub(super) fn started(&self) {
        self.busy.store(true, Ordering::Relaxed);
    }

    /// Its response is ready: the idle timeout runs from now.
    pub(super) fn finished(&self) {
        let us = u64::try_from(self.origin.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.idle_since.store(us, Ordering::Relaxed);
        // One task writes: no read-modify-write needed.
        let done = self.done.load(Ordering::Relaxed);
        self.done.store(done.wrapping_add(1), Ordering::Relaxed);
        self.busy.store(false, Ordering::Release);
    }

    /// `None` while a request is in hand; else how many have been answered, the last when.
    fn answered(&self) -> Option<(u64, Instant)> {
        if self.busy.load(Ordering::Acquire) {
            return None;
        }
        let us = self.idle_since.load(Ordering::Relaxed);
        let done = self.done.load(Ordering::Relaxed);
        Some((done, self.origin + Duration::from_micros(us)))
    }
}

/// Where the connection is, as far as its deadlines go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// Since the previous response: waiting for the next request's first byte.
    Idle(Instant),
    /// Since the connection opened or a request's first byte came: waiting for its head.
    Head(Instant),
    /// A request is being handled; its body has its own timeout (`read_body`).
    Busy,
}

/// A stream whose reads and writes fail with `TimedOut` once the connection has stayed
/// idle, or sent part of a request head, for too long.
pub(super) struct Timed<T> {
    io: T,
    header: Duration,
    idle: Duration,
    /// Kept by the service ([`super::Conn`]).
    activity: Arc<Activity>,
    stage: Stage,
    /// Responses seen answered ([`Activity::answered`]).
    seen: u64,
    /// Fires at or before the current deadline. Armed at most `min(header, idle)` ahead, so
    /// no later stage can have an earlier deadline, and re-armed only when it fires: a
    /// request costs no timer operation. It ticks while a request is in hand too, since
    /// hyper reads again after a response only when woken.
    timer: Option<Pin<Box<Sleep>>>,
}

impl<T> Timed<T> {
    pub(super) fn new(io: T, header: Duration, idle: Duration, activity: Arc<Activity>) -> Self {
        Self {
            io,
            header,
            idle,
            activity,
            stage: Stage::Head(Instant::now()),
            seen: 0,
            timer: None,
        }
    }

    /// Follows the service: a request began (busy) or its response is ready (idle).
    fn observe(&mut self) {
        match self.activity.answered() {
            None => self.stage = Stage::Busy,
            Some((done, since)) if done != self.seen => {
                self.seen = done;
                self.stage = Stage::Idle(since);
            }
            Some(_) => {}
        }
    }

    /// Called when the stream is not ready: `TimedOut` past the stage's deadline, else
    /// pending with the timer armed.
    fn expire<R>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<R>> {
        self.observe();
        let deadline = match self.stage {
            Stage::Idle(since) => Some(since + self.idle),
            Stage::Head(since) => Some(since + self.header),
            Stage::Busy => None,
        };
        let step = self.header.min(self.idle);
        loop {
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                let what = match self.stage {
                    Stage::Idle(_) => "idle keep-alive timeout",
                    _ => "request head timeout",
                };
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, what)));
            }
            let at = deadline.map_or(now + step, |d| d.min(now + step));
            let timer = self
                .timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            timer.as_mut().reset(at);
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Timed<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) if buf.filled().len() > before => {
                this.observe();
                if let Stage::Idle(_) = this.stage {
                    this.stage = Stage::Head(Instant::now());
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => this.expire(cx),
            ready => ready,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Timed<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_write(cx, buf) {
            Poll::Pending => this.expire(cx),
            ready => ready,
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_write_vectored(cx, bufs) {
            Poll::Pending => this.expire(cx),
            ready => ready,
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    //! On real time, short timeouts (paused time would take tokio's `test-util` into every
    //! build with dev-dependencies, benches included).
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const HEADER: Duration = Duration::from_millis(200);
    const IDLE: Duration = Duration::from_millis(400);
    /// However loaded the machine, a cut comes within this much of its deadline.
    const LATE: Duration = Duration::from_secs(2);

    fn timed() -> (
        Timed<tokio::io::DuplexStream>,
        tokio::io::DuplexStream,
        Arc<Activity>,
    ) {
        let (server, client) = tokio::io::duplex(64);
        let activity = Arc::new(Activity::new());
        (
            Timed::new(server, HEADER, IDLE, activity.clone()),
            client,
            activity,
        )
    }

    /// The read fails with `TimedOut` no sooner than `after` from `from`, and not much later.
    async fn cut(conn: &mut Timed<tokio::io::DuplexStream>, from: Instant, after: Duration) {
        let mut buf = [0u8; 8];
        let read = tokio::time::timeout(after + LATE, conn.read(&mut buf)).await;
        let err = read.expect("cut in time").expect_err("no data comes");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(from.elapsed() >= after, "{:?} < {after:?}", from.elapsed());
    }

    #[tokio::test]
    async fn a_head_must_arrive_within_the_header_timeout() {
        let (mut conn, _client, _) = timed();
        cut(&mut conn, Instant::now(), HEADER).await;
    }

    #[tokio::test]
    async fn between_requests_the_idle_timeout_applies_then_the_header_one() {
        let (mut conn, mut client, activity) = timed();
        let mut buf = [0u8; 8];
        client.write_all(b"GET").await.unwrap();
        assert_eq!(conn.read(&mut buf).await.unwrap(), 3);
        activity.started();
        // Handling a request: no deadline, however long it takes.
        let read = tokio::time::timeout(IDLE * 2, conn.read(&mut buf)).await;
        assert!(read.is_err(), "a busy connection is not cut");
        activity.finished();
        let idle_from = Instant::now();
        // Past the header timeout while idle, still open: the next request's first byte
        // starts its own header timeout.
        let read = tokio::time::timeout(HEADER + HEADER / 2, conn.read(&mut buf)).await;
        assert!(read.is_err(), "idle, not cut at the header timeout");
        client.write_all(b"G").await.unwrap();
        assert_eq!(conn.read(&mut buf).await.unwrap(), 1);
        let head_from = Instant::now();
        cut(&mut conn, head_from, HEADER).await;
        assert!(idle_from.elapsed() >= HEADER * 2);

        let (mut conn, _client, activity) = timed();
        activity.started();
        activity.finished();
        cut(&mut conn, Instant::now(), IDLE).await;
    }
}
