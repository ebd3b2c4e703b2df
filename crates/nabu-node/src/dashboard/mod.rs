//! The dashboard: a live picture of the cluster at `/` on every node's management plane, and
//! the JSON and Server-Sent-Events API (`/api/v1/...`, `docs/api.md`) that the page and
//! scripts share.
//!
//! **Why plain files, embedded.** The page is one HTML file, one stylesheet and one script
//! (`index.html`, `style.css`, `app.js` beside this module) compiled into the binary with
//! `include_str!`: no build step, no package manager, no CDN, so it works air-gapped and
//! its supply chain is this repository. It draws the ring on a canvas, aggregating the
//! virtual nodes per pixel, so a 1,000-node ring (150,000 arcs) renders in one pass.
//!
//! **Why the serving node collects.** The page talks to the one node it was loaded from (a
//! port-forward to one node is enough); that node's [`Hub`] samples every member's
//! `/api/v1/node` and streams cluster-wide rates over `/api/v1/stream`, twice a second,
//! while someone listens. The ring and placement questions are answered by the node's own
//! [`nabu_core::ring::Ring`] and the client's placement rules ([`ring`]), never by
//! JavaScript re-implementing the hashing.
//!
//! Demo mode (`?demo=N` on the page, `/api/v1/ring` and `/api/v1/placement`) swaps in a
//! synthetic member list of N nodes; see [`ring`].

mod hub;
mod ring;
mod stats;

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use serde::Deserialize;
use tokio::sync::{broadcast, mpsc, watch};

pub use hub::{ClassLatency, Hub, HubMessage, LiveLink, LiveNode, LiveSample, LiveView};
pub use ring::{
    DEMO_NODES_MAX, ObjectPlacement, PlacedNode, PlacementView, PointPlacement, RingMember,
    RingView, StripePlacement, demo_ring,
};
pub use stats::{ClassHistogram, Hardware, NodeGauges, NodeStats, PeerTraffic};

use crate::events::EventEntry;
use crate::node::{Node, until_stopped};

/// Messages one stream listener may have queued before it misses some.
const LISTENER_QUEUE_MAX: usize = 2 * hub::RECENT_EVENTS_MAX;
/// Events `/api/v1/events` returns at most.
const EVENTS_PAGE_MAX: usize = crate::events::EVENTS_MAX;

/// What the dashboard's handlers share.
#[derive(Debug, Clone)]
struct Dashboard {
    node: Arc<Node>,
    shutdown: watch::Receiver<bool>,
}

/// The page, its assets and the `/api/v1` routes other than `/api/v1/cluster`.
pub fn routes(node: Arc<Node>, shutdown: watch::Receiver<bool>) -> Router {
    Router::new()
        .route(
            "/",
            get(|| asset("text/html; charset=utf-8", include_str!("index.html"))),
        )
        .route(
            "/dashboard/app.js",
            get(|| asset("text/javascript; charset=utf-8", include_str!("app.js"))),
        )
        .route(
            "/dashboard/style.css",
            get(|| asset("text/css; charset=utf-8", include_str!("style.css"))),
        )
        .route("/api/v1/node", get(node_stats))
        .route("/api/v1/ring", get(ring_view))
        .route("/api/v1/placement", get(placement))
        .route("/api/v1/events", get(events))
        .route("/api/v1/stream", get(stream))
        .with_state(Dashboard { node, shutdown })
}

async fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// An API error: its status and `{"error": message}`.
fn api_error(status: StatusCode, message: impl Into<String>) -> Response {
    let body = serde_json::json!({ "error": message.into() });
    (status, Json(body)).into_response()
}

/// Runs `work` on the blocking pool (it reads statvfs or builds a large ring) and answers
/// with its JSON.
async fn blocking_json<T: serde::Serialize + Send + 'static>(
    work: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Response {
    match nabu_client::sim::spawn_blocking(work).await {
        Ok(Ok(value)) => Json(value).into_response(),
        Ok(Err(message)) => api_error(StatusCode::BAD_REQUEST, message),
        Err(_) => api_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the request's task failed",
        ),
    }
}

async fn node_stats(State(dashboard): State<Dashboard>) -> Response {
    let node = dashboard.node;
    blocking_json(move || Ok(stats::node_stats(&node, node.dashboard.hardware()))).await
}

async fn ring_view(
    State(dashboard): State<Dashboard>,
    Query(query): Query<ring::RingQuery>,
) -> Response {
    let node = dashboard.node;
    blocking_json(move || {
        let choice = ring::RingChoice::of(&node, query.demo)?;
        Ok(ring::ring_view(choice.ring(), query.demo.is_some()))
    })
    .await
}

async fn placement(
    State(dashboard): State<Dashboard>,
    Query(query): Query<ring::PlacementQuery>,
) -> Response {
    match ring::placement(&dashboard.node, query).await {
        Ok(view) => Json(view).into_response(),
        Err(ring::PlacementError::BadRequest(message)) => {
            api_error(StatusCode::BAD_REQUEST, message)
        }
        Err(ring::PlacementError::NotFound(message)) => api_error(StatusCode::NOT_FOUND, message),
        Err(ring::PlacementError::Unavailable(message)) => {
            api_error(StatusCode::SERVICE_UNAVAILABLE, message)
        }
    }
}

/// The query of `/api/v1/events`.
#[derive(Debug, Deserialize)]
struct EventsQuery {
    /// Only entries with a greater sequence number.
    #[serde(default)]
    after: u64,
    /// At most this many (the newest).
    limit: Option<usize>,
}

async fn events(
    State(dashboard): State<Dashboard>,
    Query(query): Query<EventsQuery>,
) -> Json<Vec<EventEntry>> {
    let limit = query.limit.unwrap_or(EVENTS_PAGE_MAX).min(EVENTS_PAGE_MAX);
    Json(dashboard.node.events.since(query.after, limit))
}

/// `/api/v1/stream`: recent events, the newest live view, then both as they come, until the
/// listener leaves or the node shuts down.
async fn stream(State(dashboard): State<Dashboard>) -> Response {
    let Dashboard { node, mut shutdown } = dashboard;
    let (backlog, mut messages) = node.dashboard.subscribe(&node, shutdown.clone());
    let (queue, receiver) = mpsc::channel(LISTENER_QUEUE_MAX);
    // A full queue (a listener not reading) skips messages rather than holding the hub back.
    let forward = move |message: &HubMessage| queue.try_send(sse_event(message));
    tokio::spawn(async move {
        for message in &backlog {
            if let Err(mpsc::error::TrySendError::Closed(_)) = forward(message) {
                return;
            }
        }
        loop {
            let message = tokio::select! {
                biased;
                _ = until_stopped(&mut shutdown) => return,
                message = messages.recv() => message,
            };
            match message {
                Ok(message) => {
                    if let Err(mpsc::error::TrySendError::Closed(_)) = forward(&message) {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    Sse::new(Listener { receiver })
        .keep_alive(KeepAlive::default())
        .into_response()
}

fn sse_event(message: &HubMessage) -> SseEvent {
    match message {
        HubMessage::Stats(json) => SseEvent::default().event("stats").data(&**json),
        HubMessage::Event(json) => SseEvent::default().event("event").data(&**json),
    }
}

/// One stream listener's queue as the `Stream` axum's [`Sse`] takes.
#[derive(Debug)]
struct Listener {
    receiver: mpsc::Receiver<SseEvent>,
}

impl futures_core::Stream for Listener {
    type Item = Result<SseEvent, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.receiver.poll_recv(context).map(|event| event.map(Ok))
    }
}
