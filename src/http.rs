//! The HTTP side: `/metrics` (pre-rendered bytes of the latest snapshot, gzip when the
//! client accepts it), a landing page, and the `/-/healthy` and `/-/ready` probes. A
//! request never triggers a sample: serving `/metrics` is a reference-count increment on
//! bytes rendered (and compressed) once per sample.
//!
//! Limits, so clients cannot hurt the host: GET and HEAD only; request headers must
//! arrive within [`HEADER_READ_TIMEOUT`] and fit in [`MAX_REQUEST_BYTES`]; at most
//! [`MAX_CONNECTIONS`] connections are served at once (the rest wait in the kernel's
//! accept queue); TLS handshakes time out too. TLS and basic auth come from
//! `--web.config.file` ([`crate::webconfig`]).

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
use tokio::sync::{watch, Semaphore};

use crate::sampler::Latest;
use crate::webconfig::{BasicAuth, WebConfig};

pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A client must send its request headers within this time, or the connection is closed.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request (line and headers) read; a larger one is answered 431 and closed.
pub const MAX_REQUEST_BYTES: usize = 16 * 1024;
/// Connections served at once; more wait in the kernel's accept queue.
pub const MAX_CONNECTIONS: usize = 512;
/// How long in-flight requests may take to finish after shutdown begins.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(4);
/// bcrypt checks run at once; more wait (a password guesser cannot take every core).
const AUTH_CHECKS: usize = 1;

pub struct Web {
    pub latest: Latest,
    pub telemetry_path: String,
    pub auth: Option<BasicAuth>,
    auth_slots: Semaphore,
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
    pub fn new(latest: Latest, telemetry_path: String, auth: Option<BasicAuth>) -> Web {
        Web { latest, telemetry_path, auth, auth_slots: Semaphore::new(AUTH_CHECKS) }
    }

    pub async fn handle<B>(&self, req: &Request<B>) -> Resp {
        if let Some(auth) = &self.auth {
            let header = req.headers().get(AUTHORIZATION).and_then(|v| v.to_str().ok());
            // A scraper's credentials, once verified, are answered inline; only an unknown
            // header pays for bcrypt, on a blocking thread, one at a time.
            let allowed = auth.known_good(header) || {
                let (auth, header) = (auth.clone(), header.map(str::to_owned));
                match self.auth_slots.acquire().await {
                    Ok(_permit) => {
                        tokio::task::spawn_blocking(move || auth.check(header.as_deref())).await.unwrap_or(false)
                    }
                    Err(_) => false,
                }
            };
            if !allowed {
                let mut r = text(StatusCode::UNAUTHORIZED, "unauthorized\n");
                r.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"sockwatch\""));
                return r;
            }
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
                    let mut r = response(StatusCode::OK, PROMETHEUS_CONTENT_TYPE, published.prometheus_gzip.clone());
                    r.headers_mut().insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                    r.headers_mut().insert(VARY, HeaderValue::from_static("Accept-Encoding"));
                    r
                }
                Some(published) => {
                    let mut r = response(StatusCode::OK, PROMETHEUS_CONTENT_TYPE, published.prometheus.clone());
                    r.headers_mut().insert(VARY, HeaderValue::from_static("Accept-Encoding"));
                    r
                }
                None => text(StatusCode::SERVICE_UNAVAILABLE, "no sample taken yet, retry in a moment\n"),
            },
            "/" => response(StatusCode::OK, "text/html; charset=utf-8", self.landing_page()),
            "/-/healthy" => text(StatusCode::OK, "OK\n"),
            "/-/ready" => match latest {
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

/// Serves one connection (plain or TLS) until it ends; `watcher` lets shutdown wait for it.
async fn connection<S>(stream: S, web: Arc<Web>, watcher: Watcher)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let web = web.clone();
        async move { Ok::<_, Infallible>(web.handle(&req).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_REQUEST_BYTES)
        .serve_connection(TokioIo::new(stream), service);
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!("connection ended: {e}");
    }
}

/// Serves until `shutdown` flips, then stops accepting and gives in-flight requests
/// [`SHUTDOWN_GRACE`] to finish.
pub async fn serve(listener: TcpListener, web: Arc<Web>, tls: Option<WebConfig>, mut shutdown: watch::Receiver<bool>) {
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let acceptor = tls.and_then(|c| c.tls);
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p.expect("semaphore never closed"),
            _ = shutdown.changed() => break,
        };
        let (stream, _peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(conn) => conn,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let (web, watcher, acceptor) = (web.clone(), graceful.watcher(), acceptor.clone());
        tokio::spawn(async move {
            match acceptor {
                None => connection(stream, web, watcher).await,
                Some(acceptor) => match tokio::time::timeout(HEADER_READ_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => connection(tls, web, watcher).await,
                    Ok(Err(e)) => tracing::debug!("TLS handshake failed: {e}"),
                    Err(_) => tracing::debug!("TLS handshake timed out"),
                },
            }
            drop(permit);
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
