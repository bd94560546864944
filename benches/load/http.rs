//! The measured HTTP requests: each worker keeps one HTTP/1.1 connection (as wrk does) and
//! sends over hyper's bare connection API, so that the load generator takes as little of
//! the machine's two cores as it can from the server it measures.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// A request not answered in this time is an error (and its connection is dropped).
const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// One worker's connection, made on its first request and made again after an error.
#[derive(Default)]
pub struct Conn {
    open: Option<(String, SendRequest<Full<Bytes>>)>,
}

/// A request, by base URL (`http://host:port[/prefix]`) and path.
pub struct Call<'a> {
    pub method: Method,
    pub base: &'a str,
    pub path: String,
    pub body: Option<Vec<u8>>,
    pub headers: Vec<(&'static str, &'a str)>,
}

impl Conn {
    /// Sends `call` and reads the whole answer; its status and body, or what went wrong.
    pub async fn send(&mut self, call: Call<'_>) -> Result<(StatusCode, Bytes), String> {
        let (authority, prefix) = split(call.base)?;
        let sender = self.ready(authority).await?;
        let mut req = Request::builder()
            .method(call.method)
            .uri(format!("{prefix}{}", call.path))
            .header(HOST, authority);
        for (name, value) in call.headers {
            req = req.header(name, value);
        }
        if call.body.is_some() {
            req = req.header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        let body = Full::new(Bytes::from(call.body.unwrap_or_default()));
        let req = req.body(body).map_err(|e| format!("request: {e}"))?;
        let exchange = async {
            let resp = sender.send_request(req).await?;
            let status = resp.status();
            let body = resp.into_body().collect().await?.to_bytes();
            Ok::<_, hyper::Error>((status, body))
        };
        let result = match tokio::time::timeout(TIMEOUT, exchange).await {
            Ok(Ok(answer)) => return Ok(answer),
            Ok(Err(e)) => format!("http: {e}"),
            Err(_) => "timeout".to_owned(),
        };
        self.open = None;
        Err(result)
    }

    async fn ready(&mut self, authority: &str) -> Result<&mut SendRequest<Full<Bytes>>, String> {
        if self
            .open
            .as_ref()
            .is_some_and(|(a, s)| a != authority || s.is_closed())
        {
            self.open = None;
        }
        if self.open.is_none() {
            let stream = TcpStream::connect(authority)
                .await
                .map_err(|_| "connect".to_owned())?;
            let _ = stream.set_nodelay(true);
            let (sender, conn) = http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| format!("handshake: {e}"))?;
            tokio::spawn(conn);
            self.open = Some((authority.to_owned(), sender));
        }
        let (_, sender) = self.open.as_mut().ok_or("no connection")?;
        sender.ready().await.map_err(|e| format!("http: {e}"))?;
        Ok(sender)
    }
}

/// `http://host:port/prefix` → (`host:port`, `/prefix`).
fn split(base: &str) -> Result<(&str, &str), String> {
    let rest = base
        .strip_prefix("http://")
        .ok_or_else(|| format!("only http:// is measured, not {base}"))?;
    Ok(rest.find('/').map_or((rest, ""), |i| rest.split_at(i)))
}
