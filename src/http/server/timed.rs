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
    /// When the last response was ready, in µs after `origin`.
    idle_since: AtomicU64,
}

impl Activity {
    pub(super) fn new() -> Self {
        Self {
            origin: Instant::now(),
            busy: AtomicBool::new(false),
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
        self.busy.store(false, Ordering::Release);
    }

    /// `None` while a request is in hand.
    fn idle_since(&self) -> Option<Instant> {
        if self.busy.load(Ordering::Acquire) {
            return None;
        }
        let us = self.idle_since.load(Ordering::Relaxed);
        Some(self.origin + Duration::from_micros(us))
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
            timer: None,
        }
    }

    /// Follows the service: a request began (busy) or its response is ready (idle).
    fn observe(&mut self) {
        self.stage = match (self.stage, self.activity.idle_since()) {
            (Stage::Busy, Some(since)) => Stage::Idle(since),
            (Stage::Idle(_) | Stage::Head(_), None) => Stage::Busy,
            (stage, _) => stage,
        };
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
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const HEADER: Duration = Duration::from_secs(10);
    const IDLE: Duration = Duration::from_secs(60);

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

    /// Equal to the millisecond (the timer's resolution).
    fn near(elapsed: Duration, expected: Duration) -> bool {
        elapsed.abs_diff(expected) <= Duration::from_millis(1)
    }

    async fn timed_out(read: impl std::future::Future<Output = io::Result<usize>>) -> bool {
        matches!(read.await, Err(e) if e.kind() == io::ErrorKind::TimedOut)
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_must_arrive_within_the_header_timeout() {
        let (mut conn, _client, _) = timed();
        let started = Instant::now();
        let mut buf = [0u8; 8];
        assert!(timed_out(conn.read(&mut buf)).await);
        assert!(near(started.elapsed(), HEADER), "{:?}", started.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn between_requests_the_idle_timeout_applies_then_the_header_one() {
        let (mut conn, mut client, activity) = timed();
        let mut buf = [0u8; 8];
        client.write_all(b"GET").await.unwrap();
        assert_eq!(conn.read(&mut buf).await.unwrap(), 3);
        activity.started();
        // Handling a request: no deadline from here, however long it takes.
        let read = tokio::time::timeout(IDLE * 2, conn.read(&mut buf)).await;
        assert!(read.is_err(), "a busy connection is not cut");
        activity.finished();
        let idle_from = Instant::now();
        assert!(timed_out(conn.read(&mut buf)).await);
        assert!(near(idle_from.elapsed(), IDLE), "{:?}", idle_from.elapsed());

        let (mut conn, mut client, activity) = timed();
        activity.started();
        assert!(
            tokio::time::timeout(HEADER, conn.read(&mut buf))
                .await
                .is_err()
        );
        activity.finished();
        let idle_from = Instant::now();
        assert!(
            tokio::time::timeout(IDLE / 2, conn.read(&mut buf))
                .await
                .is_err()
        );
        // The next request's first byte: its head now has the header timeout.
        client.write_all(b"G").await.unwrap();
        assert_eq!(conn.read(&mut buf).await.unwrap(), 1);
        let head_from = Instant::now();
        assert!(timed_out(conn.read(&mut buf)).await);
        assert!(
            near(head_from.elapsed(), HEADER),
            "{:?}",
            head_from.elapsed()
        );
        assert!(idle_from.elapsed() < IDLE);
    }
}
