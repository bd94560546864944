//! The REST edge's server: warp's filter served as HTTP/1.1 by hyper on an accept loop of our
//! own, because `warp::serve` has no timeouts and no connection cap. A client gets
//! [`HttpLimits::header_timeout`] for each request head and
//! [`HttpLimits::idle_timeout`] between requests ([`timed`]); bodies are timed where they
//! are read (`read_body`). Past [`HttpLimits::max_connections`] the loop stops accepting, so
//! new connections wait in the kernel's listen backlog until one closes. Cleartext HTTP/2
//! (h2c) is not spoken: no caller needs it, and one protocol is one set of limits to keep.

mod timed;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use user_core::retry::Backoff;
use warp::http::Request;
use warp::reply::Response;

use crate::config::HttpLimits;
use timed::{Activity, Timed};

/// The TCP peer of a request, put in its extensions (`warp::ext::optional` reads it).
#[derive(Clone, Copy, Debug)]
pub struct PeerAddr(pub SocketAddr);

/// Serves `service` (from `warp::service`) on `listener` until `stop` turns true, then lets
/// in-flight requests finish while idle connections close.
pub async fn serve<S>(
    listener: TcpListener,
    service: S,
    limits: HttpLimits,
    mut stop: watch::Receiver<bool>,
) where
    S: tower_service::Service<Request<Incoming>, Response = Response, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    // `Timed` keeps the head and idle deadlines; hyper's one timer would merge them.
    http.header_read_timeout(None::<Duration>);
    let mut backoff = Backoff::new(Duration::from_millis(10), Duration::from_secs(1));
    loop {
        let permit = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            permit = slots.clone().acquire_owned() => permit,
        };
        let Ok(permit) = permit else { break };
        let accepted = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            // Out of file descriptors, most likely: wait, as other connections close.
            Err(e) => {
                tracing::warn!(error = %e, "cannot accept a REST connection");
                if !backoff.wait(&mut stop).await {
                    break;
                }
                continue;
            }
        };
        let activity = Arc::new(Activity::new());
        let io = Timed::new(
            stream,
            limits.header_timeout,
            limits.idle_timeout,
            activity.clone(),
        );
        let conn = http.serve_connection(
            TokioIo::new(io),
            Conn {
                inner: service.clone(),
                peer: PeerAddr(peer),
                activity,
            },
        );
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, %peer, "REST connection ended");
            }
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// One connection's service: names the peer, and tells [`Timed`] when a request is in hand.
struct Conn<S> {
    inner: S,
    peer: PeerAddr,
    activity: Arc<Activity>,
}

impl<S> hyper::service::Service<Request<Incoming>> for Conn<S>
where
    S: tower_service::Service<Request<Incoming>, Response = Response, Error = Infallible> + Clone,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Handling<S::Future>;

    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        req.extensions_mut().insert(self.peer);
        self.activity.started();
        // A warp service is always ready (its `poll_ready` returns `Ready` at once).
        Handling {
            inner: self.inner.clone().call(req),
            activity: self.activity.clone(),
        }
    }
}

pin_project_lite::pin_project! {
    /// A request being handled; the connection counts as idle once its response is ready.
    struct Handling<F> {
        #[pin]
        inner: F,
        activity: Arc<Activity>,
    }
}

impl<F: Future> Future for Handling<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let out = std::task::ready!(this.inner.poll(cx));
        this.activity.finished();
        Poll::Ready(out)
    }
}
