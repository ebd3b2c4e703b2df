//! The gateway's Prometheus metrics: requests by S3 operation and status class, their time to
//! response headers, bytes in and out, requests in flight.
//!
//! [`Metered`] wraps the S3 service (any hyper service) and names each request's operation
//! from its method, target and headers the way S3 routes them ([`operation`]), before `s3s`
//! parses it; the counters are relaxed atomics in fixed arrays (every label value is known
//! up front), rendered by [`S3Metrics::render`] into the node's `/metrics` as the node's own
//! families are.

use std::fmt::Write;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Instant;

use hyper::body::Incoming;
use hyper::service::Service;
use hyper::{Method, Request, Response};

/// The S3 operations the gateway serves, as metric label values; `Other` for anything else
/// (answered by `s3s` with an error).
pub const OPERATIONS: [&str; 22] = [
    "ListBuckets",
    "CreateBucket",
    "HeadBucket",
    "DeleteBucket",
    "ListObjects",
    "ListObjectsV2",
    "GetObject",
    "HeadObject",
    "PutObject",
    "CopyObject",
    "DeleteObject",
    "DeleteObjects",
    "CreateMultipartUpload",
    "UploadPart",
    "UploadPartCopy",
    "CompleteMultipartUpload",
    "AbortMultipartUpload",
    "ListParts",
    "ListMultipartUploads",
    "GetBucketLocation",
    "GetBucketSubresource",
    "Other",
];

/// Status classes, as label values.
const STATUS_CLASSES: [&str; 4] = ["2xx", "3xx", "4xx", "5xx"];

/// The index in [`OPERATIONS`] of the operation `request` asks for, by S3's routing:
/// path-style `/bucket/key` (or an absolute-form target), query sub-resources, and the
/// copy-source header.
pub fn operation<B>(request: &Request<B>) -> usize {
    let uri = request.uri();
    let path = uri.path().trim_start_matches('/');
    let (bucket, key) = match path.split_once('/') {
        Some((bucket, key)) => (bucket, key),
        None => (path, ""),
    };
    let query = uri.query().unwrap_or("");
    let has = |name: &str| {
        query
            .split('&')
            .any(|pair| pair.split('=').next() == Some(name))
    };
    let copy = request.headers().contains_key("x-amz-copy-source");
    let name = match (request.method(), bucket.is_empty(), key.is_empty()) {
        (&Method::GET, true, _) => "ListBuckets",
        (&Method::GET, false, true) if has("uploads") => "ListMultipartUploads",
        (&Method::GET, false, true) if has("location") => "GetBucketLocation",
        (&Method::GET, false, true) if query.contains("list-type=2") => "ListObjectsV2",
        (&Method::GET, false, true) if has("versioning") || has("policy") || has("acl") => {
            "GetBucketSubresource"
        }
        (&Method::GET, false, true) => "ListObjects",
        (&Method::GET, false, false) if has("uploadId") => "ListParts",
        (&Method::GET, false, false) => "GetObject",
        (&Method::HEAD, false, true) => "HeadBucket",
        (&Method::HEAD, false, false) => "HeadObject",
        (&Method::PUT, false, true) => "CreateBucket",
        (&Method::PUT, false, false) if has("partNumber") && has("uploadId") => {
            if copy {
                "UploadPartCopy"
            } else {
                "UploadPart"
            }
        }
        (&Method::PUT, false, false) if copy => "CopyObject",
        (&Method::PUT, false, false) => "PutObject",
        (&Method::POST, false, _) if has("delete") => "DeleteObjects",
        (&Method::POST, false, false) if has("uploads") => "CreateMultipartUpload",
        (&Method::POST, false, false) if has("uploadId") => "CompleteMultipartUpload",
        (&Method::DELETE, false, true) => "DeleteBucket",
        (&Method::DELETE, false, false) if has("uploadId") => "AbortMultipartUpload",
        (&Method::DELETE, false, false) => "DeleteObject",
        _ => "Other",
    };
    OPERATIONS
        .iter()
        .position(|operation| *operation == name)
        .expect("a listed operation")
}

/// Counters of one operation.
#[derive(Debug, Default)]
struct OpCounters {
    /// Answered requests by status class.
    by_status: [AtomicU64; 4],
    /// Microseconds from the request's arrival to its response headers, summed.
    micros: AtomicU64,
    /// Request body bytes (as declared: `x-amz-decoded-content-length`, else
    /// `Content-Length`).
    received: AtomicU64,
    /// Response body bytes (as declared by `Content-Length`).
    sent: AtomicU64,
}

/// The gateway's counters.
#[derive(Debug, Default)]
pub struct S3Metrics {
    ops: [OpCounters; OPERATIONS.len()],
    in_flight: AtomicI64,
}

impl S3Metrics {
    /// Appends the gateway's families in the Prometheus text format.
    pub fn render(&self, out: &mut String) {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        family(
            out,
            "nabu_s3_requests_total",
            "counter",
            "S3 requests answered, by operation and status class.",
        );
        for (name, op) in OPERATIONS.iter().zip(&self.ops) {
            for (status, count) in STATUS_CLASSES.iter().zip(&op.by_status) {
                let count = load(count);
                if count > 0 {
                    let _ = writeln!(
                        out,
                        "nabu_s3_requests_total{{op=\"{name}\",status=\"{status}\"}} {count}"
                    );
                }
            }
        }
        family(
            out,
            "nabu_s3_request_duration_seconds",
            "summary",
            "Time from an S3 request's arrival to its response headers (a GET's body streams after).",
        );
        for (name, op) in OPERATIONS.iter().zip(&self.ops) {
            let count: u64 = op.by_status.iter().map(load).sum();
            if count > 0 {
                let seconds = load(&op.micros) as f64 / 1e6;
                let _ = writeln!(
                    out,
                    "nabu_s3_request_duration_seconds_sum{{op=\"{name}\"}} {seconds}"
                );
                let _ = writeln!(
                    out,
                    "nabu_s3_request_duration_seconds_count{{op=\"{name}\"}} {count}"
                );
            }
        }
        for (metric, help, pick) in [
            (
                "nabu_s3_received_bytes_total",
                "S3 request body bytes, by operation (as declared by the request).",
                (|op: &OpCounters| &op.received) as fn(&OpCounters) -> &AtomicU64,
            ),
            (
                "nabu_s3_sent_bytes_total",
                "S3 response body bytes, by operation (as declared by Content-Length).",
                |op: &OpCounters| &op.sent,
            ),
        ] {
            family(out, metric, "counter", help);
            for (name, op) in OPERATIONS.iter().zip(&self.ops) {
                let bytes = load(pick(op));
                if bytes > 0 {
                    let _ = writeln!(out, "{metric}{{op=\"{name}\"}} {bytes}");
                }
            }
        }
        family(
            out,
            "nabu_s3_requests_in_flight",
            "gauge",
            "S3 requests received and not yet answered.",
        );
        let _ = writeln!(
            out,
            "nabu_s3_requests_in_flight {}",
            self.in_flight.load(Ordering::Relaxed)
        );
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A header's value as a number, if it is one.
fn header_u64(headers: &hyper::HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.parse().ok()
}

/// A hyper service that counts what `inner` serves into [`S3Metrics`].
#[derive(Debug, Clone)]
pub struct Metered<S> {
    inner: S,
    metrics: Arc<S3Metrics>,
}

impl<S> Metered<S> {
    /// `inner`, counted.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            metrics: Arc::default(),
        }
    }

    /// Its counters.
    pub fn metrics(&self) -> Arc<S3Metrics> {
        Arc::clone(&self.metrics)
    }
}

impl<S, B> Service<Request<Incoming>> for Metered<S>
where
    S: Service<Request<Incoming>, Response = Response<B>>,
    S::Future: Send + 'static,
{
    type Response = Response<B>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<B>, S::Error>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let started = Instant::now();
        let op = operation(&request);
        let headers = request.headers();
        let received = header_u64(headers, "x-amz-decoded-content-length")
            .or_else(|| header_u64(headers, "content-length"))
            .unwrap_or(0);
        let metrics = Arc::clone(&self.metrics);
        metrics.in_flight.fetch_add(1, Ordering::Relaxed);
        let answer = self.inner.call(request);
        Box::pin(async move {
            let in_flight = InFlight(&metrics.in_flight);
            let answer = answer.await;
            drop(in_flight);
            let counters = &metrics.ops[op];
            counters.received.fetch_add(received, Ordering::Relaxed);
            let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            counters.micros.fetch_add(micros, Ordering::Relaxed);
            let class = match &answer {
                Ok(response) => {
                    let sent = header_u64(response.headers(), "content-length").unwrap_or(0);
                    counters.sent.fetch_add(sent, Ordering::Relaxed);
                    usize::from(response.status().as_u16() / 100)
                        .saturating_sub(2)
                        .min(3)
                }
                Err(_) => 3,
            };
            counters.by_status[class].fetch_add(1, Ordering::Relaxed);
            answer
        })
    }
}

/// Counts one request in flight until dropped: when it is answered, or when its client hangs
/// up mid-request and hyper drops the future.
struct InFlight<'a>(&'a AtomicI64);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(method: Method, target: &str, copy: bool) -> &'static str {
        let mut request = Request::builder().method(method).uri(target);
        if copy {
            request = request.header("x-amz-copy-source", "/bucket/source");
        }
        OPERATIONS[operation(&request.body(()).expect("request"))]
    }

    #[test]
    fn requests_are_named_as_s3_routes_them() {
        let cases = [
            (Method::GET, "/", false, "ListBuckets"),
            (Method::PUT, "/b", false, "CreateBucket"),
            (Method::HEAD, "/b", false, "HeadBucket"),
            (Method::DELETE, "/b", false, "DeleteBucket"),
            (
                Method::GET,
                "/b?list-type=2&prefix=a%2F",
                false,
                "ListObjectsV2",
            ),
            (Method::GET, "/b?prefix=a", false, "ListObjects"),
            (Method::GET, "/b?location", false, "GetBucketLocation"),
            (Method::GET, "/b?uploads", false, "ListMultipartUploads"),
            (Method::GET, "/b/dir/key.bin", false, "GetObject"),
            (Method::HEAD, "/b/key", false, "HeadObject"),
            (Method::PUT, "/b/key", false, "PutObject"),
            (Method::PUT, "/b/key", true, "CopyObject"),
            (Method::DELETE, "/b/key", false, "DeleteObject"),
            (Method::POST, "/b?delete", false, "DeleteObjects"),
            (
                Method::POST,
                "/b/key?uploads",
                false,
                "CreateMultipartUpload",
            ),
            (
                Method::PUT,
                "/b/key?partNumber=2&uploadId=u",
                false,
                "UploadPart",
            ),
            (
                Method::PUT,
                "/b/key?partNumber=2&uploadId=u",
                true,
                "UploadPartCopy",
            ),
            (
                Method::POST,
                "/b/key?uploadId=u",
                false,
                "CompleteMultipartUpload",
            ),
            (
                Method::DELETE,
                "/b/key?uploadId=u",
                false,
                "AbortMultipartUpload",
            ),
            (Method::GET, "/b/key?uploadId=u", false, "ListParts"),
            (Method::GET, "http://host:9000/b/key", false, "GetObject"),
            (Method::PATCH, "/b/key", false, "Other"),
        ];
        for (method, target, copy, expected) in cases {
            assert_eq!(
                op(method.clone(), target, copy),
                expected,
                "{method} {target}"
            );
        }
    }

    #[test]
    fn counters_render_as_prometheus_families() {
        let metrics = S3Metrics::default();
        let get = operation(&Request::get("/b/k").body(()).expect("request"));
        metrics.ops[get].by_status[0].fetch_add(3, Ordering::Relaxed);
        metrics.ops[get].by_status[2].fetch_add(1, Ordering::Relaxed);
        metrics.ops[get].sent.fetch_add(4096, Ordering::Relaxed);
        metrics.ops[get]
            .micros
            .fetch_add(2_000_000, Ordering::Relaxed);
        let mut out = String::new();
        metrics.render(&mut out);
        for line in [
            "nabu_s3_requests_total{op=\"GetObject\",status=\"2xx\"} 3",
            "nabu_s3_requests_total{op=\"GetObject\",status=\"4xx\"} 1",
            "nabu_s3_request_duration_seconds_sum{op=\"GetObject\"} 2",
            "nabu_s3_request_duration_seconds_count{op=\"GetObject\"} 4",
            "nabu_s3_sent_bytes_total{op=\"GetObject\"} 4096",
            "nabu_s3_requests_in_flight 0",
        ] {
            assert!(
                out.lines().any(|l| l == line),
                "{line} missing from:\n{out}"
            );
        }
        // Every sample belongs to a family declared before it.
        let mut declared = Vec::new();
        for line in out.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                declared.push(rest.split(' ').next().expect("name").to_owned());
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().expect("name");
                assert!(
                    declared
                        .iter()
                        .any(|family| name.starts_with(family.as_str())),
                    "{line}"
                );
            }
        }
    }
}
