//! The HTTP side: `/metrics` (pre-rendered bytes of the latest snapshot, gzip when the
//! client accepts it), a landing page, and the `/-/healthy` and `/-/ready` probes. A
//! request never triggers a sample: serving `/metrics` is a reference-count increment on
//! bytes rendered (and compressed) once per sample.
//!
//! Limits, so clients cannot hurt the host or each other: GET and HEAD only; a connection
//! must send its first byte within [`FIRST_BYTE_TIMEOUT`] and its request headers within
//! [`HEADER_READ_TIMEOUT`], in at most [`MAX_REQUEST_BYTES`]; at most [`MAX_CONNECTIONS`]
//! connections are held, and when they are all taken a new one closes the oldest that has
//! no request in progress ([`crate::slots`]), so connections that say nothing cannot lock
//! a scraper out; TLS handshakes time out too. TLS and basic auth come from
//! `--web.config.file` ([`crate::prometheus::webconfig`]).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{
    HeaderValue, ACCEPT_ENCODING, ALLOW, AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, VARY, WWW_AUTHENTICATE,
};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

use crate::listen::AcceptErrors;
use crate::prometheus::auth_queue::{AuthQueue, Verdict};
use crate::prometheus::webconfig::WebConfig;
use crate::sampler::Latest;
use crate::shutdown::Shutdown;
use crate::slots::{Peer, SlotState, Slots};

pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A client must send its request headers within this time, or the connection is closed.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// ...and the first byte of them (or of its TLS handshake) within this: a scraper sends
/// its request at once.
pub const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(3);
/// Largest request (line and headers) read; a larger one is answered 431 and closed.
pub const MAX_REQUEST_BYTES: usize = 16 * 1024;
/// Connections held at once; past it, idle ones are closed to make room ([`crate::slots`]).
pub const MAX_CONNECTIONS: usize = 512;
/// How long in-flight requests may take to finish after shutdown begins.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(4);

pub struct Web {
    pub latest: Latest,
    pub telemetry_path: String,
    /// TLS and basic auth from the web config: replaced whole on SIGHUP ([`Web::set_config`]).
    config: std::sync::RwLock<Arc<WebConfig>>,
    /// Who pays for bcrypt next ([`crate::prometheus::auth_queue`]).
    auth_queue: AuthQueue,
}

type Resp = Response<Full<Bytes>>;

fn response(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn text(status: StatusCode, body: &'static str) -> Resp {
    response(status, "text/plain; charset=utf-8", body)
}

/// Whether the client accepts gzip (`Accept-Encoding: gzip`, not with `q=0`).
fn accepts_gzip<B>(req: &Request<B>) -> bool {
    req.headers().get_all(ACCEPT_ENCODING).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).any(
        |item| {
            let mut parts = item.split(';').map(str::trim);
            let coding = parts.next().unwrap_or("");
            let q_zero =
                parts.any(|p| p.replace(' ', "").starts_with("q=0") && !p.contains(|c: char| ('1'..='9').contains(&c)));
            (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !q_zero
        },
    )
}

impl Web {
    pub fn new(latest: Latest, telemetry_path: String, config: WebConfig) -> Web {
        Web {
            latest,
            telemetry_path,
            config: std::sync::RwLock::new(Arc::new(config)),
            auth_queue: AuthQueue::default(),
        }
    }

    /// The web config in force.
    pub fn config(&self) -> Arc<WebConfig> {
        self.config.read().map_or_else(|p| p.into_inner().clone(), |c| c.clone())
    }

    /// Replaces TLS and basic auth (SIGHUP): new connections use the new TLS settings, and
    /// the next request is checked against the new users with an empty credential cache,
    /// so a revoked password stops working at once.
    pub fn set_config(&self, config: WebConfig) {
        if let Ok(mut c) = self.config.write() {
            *c = Arc::new(config);
        }
    }

    pub async fn handle<B>(&self, req: &Request<B>, peer: std::net::IpAddr) -> Resp {
        let header = req.headers().get(AUTHORIZATION).and_then(|v| v.to_str().ok());
        // The users in force when the answer is given: a check still running when SIGHUP
        // replaces them is done again against the new ones (a revoked password must not
        // get one more 200).
        let mut allowed = None;
        for _ in 0..3 {
            let config = self.config();
            let Some(auth) = config.auth.clone() else {
                allowed = Some(true);
                break;
            };
            // A scraper's credentials, once verified, are answered inline; only an unknown
            // header pays for bcrypt, on a blocking thread, one at a time, in the order
            // the auth queue gives (clients without failures first).
            let ok = auth.known_good(header) || {
                let permit = match self.auth_queue.wait_turn(Peer::ip(peer)).await {
                    Ok(permit) => permit,
                    Err(()) => {
                        let mut r =
                            text(StatusCode::TOO_MANY_REQUESTS, "too many unverified attempts, retry in a moment\n");
                        r.headers_mut().insert(hyper::header::RETRY_AFTER, HeaderValue::from_static("1"));
                        return r;
                    }
                };
                let h = header.map(str::to_owned);
                let ok = tokio::task::spawn_blocking(move || auth.check(h.as_deref())).await.unwrap_or(false);
                permit.done(if ok { Verdict::Good } else { Verdict::Bad });
                ok
            };
            if Arc::ptr_eq(&config, &self.config()) {
                allowed = Some(ok);
                break;
            }
        }
        if allowed != Some(true) {
            let mut r = text(StatusCode::UNAUTHORIZED, "unauthorized\n");
            r.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"sockwatch\""));
            return r;
        }
        self.route(req)
    }

    fn route<B>(&self, req: &Request<B>) -> Resp {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
            r.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            return r;
        }
        let latest = self.latest.borrow().clone();
        match req.uri().path() {
            p if p == self.telemetry_path => match latest {
                Some(published) if accepts_gzip(req) => {
                    let mut r = response(StatusCode::OK, PROMETHEUS_CONTENT_TYPE, published.rendered_gzip.clone());
                    r.headers_mut().insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                    r.headers_mut().insert(VARY, HeaderValue::from_static("Accept-Encoding"));
                    r
                }
                Some(published) => {
                    let mut r = response(StatusCode::OK, PROMETHEUS_CONTENT_TYPE, published.rendered.clone());
                    r.headers_mut().insert(VARY, HeaderValue::from_static("Accept-Encoding"));
                    r
                }
                None => text(StatusCode::SERVICE_UNAVAILABLE, "no sample taken yet, retry in a moment\n"),
            },
            "/" => response(StatusCode::OK, "text/html; charset=utf-8", self.landing_page()),
            "/-/healthy" => text(StatusCode::OK, "OK\n"),
            "/-/ready" => match latest {
                Some(p) if p.snapshot.overdue.is_some() => text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the latest sample is overdue: a kernel read is not returning\n",
                ),
                Some(_) => text(StatusCode::OK, "ready\n"),
                None => text(StatusCode::SERVICE_UNAVAILABLE, "no sample taken yet\n"),
            },
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }

    fn landing_page(&self) -> String {
        let path = self.telemetry_path.replace('&', "&amp;").replace('<', "&lt;").replace('"', "&quot;");
        format!(
            "<!doctype html>\n<html><head><title>sockwatch</title></head><body>\n<h1>sockwatch {}</h1>\n\
             <p>TCP socket states, ephemeral ports and conntrack, sampled in the background.</p>\n\
             <ul><li><a href=\"{path}\">Metrics</a></li><li><a href=\"/-/healthy\">Health</a></li>\
             <li><a href=\"/-/ready\">Readiness</a></li></ul>\n</body></html>\n",
            env!("CARGO_PKG_VERSION")
        )
    }
}

/// Serves one connection (plain or TLS) until it ends or is evicted; `watcher` lets
/// shutdown wait for it. `slot` marks when a request is in progress.
async fn connection<S>(stream: S, web: Arc<Web>, watcher: Watcher, slot: Arc<SlotState>, peer: std::net::IpAddr)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let state = slot.clone();
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let (web, state) = (web.clone(), state.clone());
        async move {
            state.begin();
            let resp = web.handle(&req, peer).await;
            state.end();
            Ok::<_, Infallible>(resp)
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_REQUEST_BYTES)
        .serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        r = watcher.watch(conn) => if let Err(e) = r {
            tracing::debug!("connection ended: {e}");
        },
        _ = slot.evicted() => tracing::debug!("idle connection closed to make room for a new one"),
    }
}

/// Serves until `shutdown` flips, then stops accepting and gives in-flight requests
/// `SHUTDOWN_GRACE` to finish.
pub async fn serve(listener: TcpListener, web: Arc<Web>, mut shutdown: Shutdown) {
    let graceful = GracefulShutdown::new();
    let slots = Slots::new(MAX_CONNECTIONS);
    let mut errors = AcceptErrors::default();
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(conn) => conn,
                Err(e) => {
                    errors.failed("HTTP", e).await;
                    continue;
                }
            },
            _ = shutdown.recv() => break,
        };
        errors.accepted("HTTP");
        // Evicts an idle connection when all are taken; waits only while all are busy.
        let slot = tokio::select! {
            s = slots.acquire(Peer::ip(peer.ip())) => s,
            _ = shutdown.recv() => break,
        };
        {
            use std::os::fd::AsRawFd;
            // The stream is closed just before the slot is released; a number reused in that
            // moment at worst ranks this silent session as one that spoke.
            slot.state.watch_fd(stream.as_raw_fd());
        }
        let acceptor = web.config().tls.clone();
        let (web, watcher, ip) = (web.clone(), graceful.watcher(), peer.ip());
        tokio::spawn(async move {
            let state = slot.state.clone();
            // Nothing within FIRST_BYTE_TIMEOUT (or evicted meanwhile): close.
            let mut byte = [0u8; 1];
            let first = tokio::select! {
                r = tokio::time::timeout(FIRST_BYTE_TIMEOUT, stream.peek(&mut byte)) => matches!(r, Ok(Ok(n)) if n > 0),
                _ = state.evicted() => false,
            };
            if first {
                state.spoke();
                match acceptor {
                    None => connection(stream, web, watcher, state, ip).await,
                    Some(acceptor) => {
                        let handshake = tokio::time::timeout(HEADER_READ_TIMEOUT, acceptor.accept(stream));
                        tokio::select! {
                            r = handshake => match r {
                                Ok(Ok(tls)) => connection(tls, web, watcher, state, ip).await,
                                Ok(Err(e)) => tracing::debug!("TLS handshake failed: {e}"),
                                Err(_) => tracing::debug!("TLS handshake timed out"),
                            },
                            _ = slot.state.evicted() => {}
                        }
                    }
                }
            }
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await.is_err() {
        tracing::warn!("in-flight HTTP requests did not finish within {}s", SHUTDOWN_GRACE.as_secs());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(accept: &str) -> Request<()> {
        Request::builder().header(ACCEPT_ENCODING, accept).body(()).unwrap()
    }

    #[test]
    fn gzip_negotiation() {
        assert!(accepts_gzip(&req("gzip")));
        assert!(accepts_gzip(&req("deflate, gzip;q=0.5")));
        assert!(accepts_gzip(&req("GZIP")));
        assert!(accepts_gzip(&req("*")));
        assert!(!accepts_gzip(&req("gzip;q=0")));
        assert!(!accepts_gzip(&req("gzip; q=0.0")));
        assert!(!accepts_gzip(&req("identity")));
        assert!(!accepts_gzip(&Request::builder().body(()).unwrap()));
    }
}
