//! The metrics listener on `metrics_listen`: hyper's HTTP/1 server with two routes,
//! `GET /metrics` (the Prometheus text format) and `GET /healthz` (200 while the daemon's
//! loop answers, 503 when it does not within [`LOOP_TIMEOUT`]).
//!
//! Nothing a client sends can hold the daemon: connections are bounded in number
//! ([`MAX_CONNECTIONS`]), in the time their request headers may take (an idle keep-alive
//! connection too, [`HEADER_TIMEOUT`]) and in their whole life ([`CONNECTION_LIFETIME`],
//! so that a client that never reads its answer cannot keep a slot); request bodies are
//! never read; the loop is asked only through a bounded channel and never waited for longer
//! than [`LOOP_TIMEOUT`]; the registry is encoded on a blocking thread, one scrape at a
//! time, so that the memory of answers in flight is at most [`MAX_CONNECTIONS`] bodies (a
//! few MiB each with 10,000 mirrors) and concurrent scrapes take one core at most.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{LoopCounts, Probe, SharedMetrics};

/// How long a request waits for the daemon's loop to answer before `/healthz` says 503 (and
/// `/metrics` serves the last counts).
pub(in crate::daemon) const LOOP_TIMEOUT: Duration = Duration::from_secs(2);
/// Connections served at once; more wait in the kernel's backlog. A Prometheus server (or
/// a pair) needs one or two.
const MAX_CONNECTIONS: usize = 8;
/// How long a connection may take to send a request's headers, and stay idle between
/// requests.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a connection may stay open at all; then it is closed once its current answer is
/// sent (or [`STOP_GRACE`] later). Scrapes take milliseconds; Prometheus reconnects.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// How long open connections get to finish their request when the listener stops.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// Why the metrics listener could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} for metrics (`metrics_listen`)")]
pub struct ListenError {
    addr: SocketAddr,
    #[source]
    source: std::io::Error,
}

/// A running metrics listener; dropping it does not stop it, [`MetricsServer::stop`] does.
pub(in crate::daemon) struct MetricsServer {
    /// The configured address (what a reload compares with).
    pub(in crate::daemon) configured: SocketAddr,
    stop: CancellationToken,
}

impl MetricsServer {
    /// Stops accepting; open connections get [`STOP_GRACE`] to finish.
    pub(in crate::daemon) fn stop(&self) {
        self.stop.cancel();
    }
}

/// What every request handler shares.
struct Shared {
    metrics: SharedMetrics,
    probes: mpsc::Sender<Probe>,
    /// One encoding at a time.
    encoding: Semaphore,
}

/// Binds `addr` (synchronously, so that a taken port is an error of the caller's step).
pub(in crate::daemon) fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, ListenError> {
    let error = |source| ListenError { addr, source };
    let listener = std::net::TcpListener::bind(addr).map_err(error)?;
    listener.set_nonblocking(true).map_err(error)?;
    Ok(listener)
}

/// Serves `listener` (bound for `configured`) until [`MetricsServer::stop`]; must run
/// inside the runtime.
pub(in crate::daemon) fn spawn(
    configured: SocketAddr,
    listener: std::net::TcpListener,
    metrics: SharedMetrics,
    probes: mpsc::Sender<Probe>,
) -> Result<MetricsServer, ListenError> {
    let error = |source| ListenError {
        addr: configured,
        source,
    };
    let local = listener.local_addr().map_err(error)?;
    let listener = TcpListener::from_std(listener).map_err(error)?;
    let stop = CancellationToken::new();
    info!(addr = %local, "serving metrics on /metrics and /healthz");
    tokio::spawn(serve(
        listener,
        Arc::new(Shared {
            metrics,
            probes,
            encoding: Semaphore::new(1),
        }),
        stop.clone(),
    ));
    Ok(MetricsServer { configured, stop })
}

async fn serve(listener: TcpListener, shared: Arc<Shared>, stop: CancellationToken) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let slot = tokio::select! {
            () = stop.cancelled() => break,
            slot = slots.clone().acquire_owned() => slot,
        };
        let Ok(slot) = slot else { break };
        let accepted = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, most likely: let the others finish first.
                warn!(cause = %e, "cannot accept a metrics connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (shared, stop) = (shared.clone(), stop.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let service = hyper::service::service_fn(move |request| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(answer(&shared, &request).await) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            let closing = async {
                tokio::select! {
                    () = stop.cancelled() => {}
                    () = tokio::time::sleep(CONNECTION_LIFETIME) => {}
                }
            };
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                () = closing => {
                    // The answer being sent may finish; then the connection closes.
                    connection.as_mut().graceful_shutdown();
                    tokio::time::timeout(STOP_GRACE, connection.as_mut())
                        .await
                        .unwrap_or(Ok(()))
                }
            };
            if let Err(e) = ended {
                debug!(cause = %e, "metrics connection ended");
            }
        });
    }
    debug!("metrics listener stopped");
}

/// Answers one request (hyper leaves the body out of an answer to HEAD).
async fn answer(shared: &Shared, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let path = request.uri().path();
    if path != "/metrics" && path != "/healthz" {
        return plain(
            StatusCode::NOT_FOUND,
            "not found: try /metrics or /healthz\n",
        );
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let counts = ask_loop(&shared.probes).await;
    if path == "/healthz" {
        match counts {
            Some(_) => plain(StatusCode::OK, "ok\n"),
            None => plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "the daemon's loop did not answer in time\n",
            ),
        }
    } else {
        let Ok(_turn) = shared.encoding.acquire().await else {
            return plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "the listener is stopping\n",
            );
        };
        let metrics = shared.metrics.clone();
        let encoded =
            tokio::task::spawn_blocking(move || metrics.encode(counts, SystemTime::now())).await;
        match encoded {
            Ok(text) => {
                let mut response = Response::new(Full::new(text));
                response.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static(
                        prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
                    ),
                );
                response
            }
            Err(e) => {
                warn!(cause = %e, "encoding the metrics failed");
                plain(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "cannot encode the metrics\n",
                )
            }
        }
    }
}

/// Asks the daemon's loop for its counts; none if it does not answer within
/// [`LOOP_TIMEOUT`] (or is gone).
async fn ask_loop(probes: &mpsc::Sender<Probe>) -> Option<LoopCounts> {
    let (tx, rx) = oneshot::channel();
    let asked = async {
        probes.send(tx).await.ok()?;
        rx.await.ok()
    };
    tokio::time::timeout(LOOP_TIMEOUT, asked)
        .await
        .ok()
        .flatten()
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
