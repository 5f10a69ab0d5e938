//! The HTTP side: `/metrics` (pre-rendered bytes of the latest snapshot), a landing
//! page, and the `/-/healthy` and `/-/ready` probes. A request never triggers a sample:
//! serving `/metrics` is a reference-count increment on the published bytes.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::sampler::Latest;

pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A client must send its request headers within this time, or the connection is closed.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more wait in the kernel's accept queue.
const MAX_CONNECTIONS: usize = 512;
/// How long in-flight requests may take to finish after shutdown begins.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(4);

pub struct Web {
    pub latest: Latest,
    pub telemetry_path: String,
}

fn response(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    response(status, "text/plain; charset=utf-8", body)
}

impl Web {
    pub fn handle(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
            r.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            return r;
        }
        let latest = self.latest.borrow().clone();
        match req.uri().path() {
            p if p == self.telemetry_path => match latest {
                Some(published) => response(StatusCode::OK, PROMETHEUS_CONTENT_TYPE, published.prometheus.clone()),
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

/// Serves until `shutdown` flips, then stops accepting and gives in-flight requests
/// [`SHUTDOWN_GRACE`] to finish.
pub async fn serve(listener: TcpListener, web: Arc<Web>, mut shutdown: watch::Receiver<bool>) {
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p.expect("semaphore never closed"),
            _ = shutdown.changed() => break,
        };
        let (stream, peer) = tokio::select! {
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
        let web = web.clone();
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let r = web.handle(&req);
            async move { Ok::<_, Infallible>(r) }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, "connection ended: {e}");
            }
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await.is_err() {
        tracing::warn!("in-flight HTTP requests did not finish within {}s", SHUTDOWN_GRACE.as_secs());
    }
}
