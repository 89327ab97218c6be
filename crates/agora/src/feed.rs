//! Every service's own events as a paged feed on its internal API, and the client that
//! reads another service's feed (what a replica rebuild catches up from; see
//! [`agora_messaging::CatchUp`]).
//!
//! `GET /internal/<service>/events?after=<position>` (a service token for `<service>`
//! required) answers the published events after `position` (0: from the first), oldest
//! first, at most [`FEED_PAGE`]:
//!
//! ```json
//! {"events": [{"position": 1, "event": {…the CloudEvents envelope…}}, …],
//!  "next": "/internal/customer/events?after=500",
//!  "pending_since": null}
//! ```
//!
//! A full page never changes: it is served with a strong `ETag` and
//! `Cache-Control: public, max-age=31536000, immutable`, and `next` links the page after
//! it. The last page (fewer events) is `no-cache`, without `next`, and says in
//! `pending_since` (RFC 3339) when the oldest event still waiting for the relay was
//! committed, or `null`.

use std::fmt;
use std::time::{Duration, SystemTime};

use agora_auth::InternalAuth;
use agora_httpkit::{FieldError, Problem};
use agora_messaging::{Db, Error, FEED_PAGE, Feed, FeedEvent, FeedPage, Outbox};
use agora_resilience::{CallError, ClientConfig, ResilientClient};
use async_trait::async_trait;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The feed route of `service`, over its store `db`, behind `internal`'s guard.
pub fn routes(service: &str, db: &Db, internal: &InternalAuth) -> Router {
    let state = FeedState {
        service: service.to_owned(),
        outbox: Outbox::new(db),
    };
    Router::new()
        .route(&path(service), get(page))
        .route_layer(internal.guard())
        .with_state(state)
}

fn path(service: &str) -> String {
    format!("/internal/{service}/events")
}

#[derive(Clone, Debug)]
struct FeedState {
    service: String,
    outbox: Outbox,
}

#[derive(Deserialize)]
struct PageQuery {
    after: Option<String>,
}

#[derive(Serialize)]
struct PageBody<'a> {
    events: Vec<EventBody<'a>>,
    next: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pending_since: Option<time::OffsetDateTime>,
}

#[derive(Serialize, Deserialize)]
struct EventBody<'a> {
    position: u64,
    #[serde(borrow)]
    event: &'a RawValue,
}

async fn page(
    State(state): State<FeedState>,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let after = match query.ok().map(|Query(q)| q.after) {
        Some(None) => 0,
        Some(Some(after)) if after.bytes().all(|b| b.is_ascii_digit()) => {
            match after.parse::<u64>() {
                Ok(after) => after,
                Err(_) => return invalid_after(),
            }
        }
        _ => return invalid_after(),
    };
    let page = match state.outbox.feed(after, FEED_PAGE).await {
        Ok(page) => page,
        Err(error) => {
            tracing::error!(%error, "cannot read the event feed");
            return Problem::service_unavailable(Duration::from_secs(1)).into_response();
        }
    };
    let full = page.events.len() == FEED_PAGE;
    let last = page.events.last().map_or(after, |event| event.position);
    let mut events = Vec::with_capacity(page.events.len());
    for event in &page.events {
        match serde_json::from_str::<&RawValue>(&event.envelope) {
            Ok(raw) => events.push(EventBody {
                position: event.position,
                event: raw,
            }),
            Err(error) => {
                tracing::error!(%error, position = event.position, "an outbox row is not JSON");
                return Problem::internal().into_response();
            }
        }
    }
    let body = PageBody {
        events,
        next: full.then(|| format!("{}?after={last}", path(&state.service))),
        pending_since: page.pending_since.map(time::OffsetDateTime::from),
    };
    let json = match serde_json::to_vec(&body) {
        Ok(json) => json,
        Err(error) => {
            tracing::error!(%error, "cannot encode a feed page");
            return Problem::internal().into_response();
        }
    };
    let mut response = if full {
        // Named by what it holds, which never changes.
        let etag = format!("\"{}-{after}-{last}\"", state.service);
        if headers
            .get(header::IF_NONE_MATCH)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|tags| tags.split(',').any(|tag| tag.trim() == etag))
        {
            StatusCode::NOT_MODIFIED.into_response()
        } else {
            json.into_response()
        }
        .with_header(header::ETAG, &etag)
        .with_header(header::CACHE_CONTROL, "public, max-age=31536000, immutable")
    } else {
        json.into_response()
            .with_header(header::CACHE_CONTROL, "no-cache")
    };
    if response.status() == StatusCode::OK {
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    response
}

fn invalid_after() -> Response {
    Problem::unprocessable(vec![FieldError::new(
        "after",
        "a feed position: a whole number, 0 or more",
    )])
    .into_response()
}

trait WithHeader {
    fn with_header(self, name: header::HeaderName, value: &str) -> Self;
}

impl WithHeader for Response {
    fn with_header(mut self, name: header::HeaderName, value: &str) -> Self {
        if let Ok(value) = HeaderValue::from_str(value) {
            self.headers_mut().insert(name, value);
        }
        self
    }
}

/// Another service's feed, read over its internal API with a service token.
#[derive(Clone)]
pub struct HttpFeed {
    owner: String,
    client: ResilientClient,
}

impl fmt::Debug for HttpFeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpFeed")
            .field("owner", &self.owner)
            .field("url", &self.client.base_url())
            .finish()
    }
}

impl HttpFeed {
    /// The feed of `owner` at `urls` (comma-separated, one per instance), read by the
    /// service `caller` (its metrics), as `reader` on the internal plane.
    pub fn new(
        caller: &'static str,
        owner: &str,
        urls: &str,
        reader: &InternalAuth,
    ) -> anyhow::Result<Self> {
        let client = agora_resilience::client(
            &format!("{owner}-feed"),
            urls,
            ClientConfig {
                timeout: Duration::from_secs(10),
                caller,
                ..ClientConfig::default()
            },
        )?
        .with_credentials(reader.credentials_for(owner));
        Ok(Self {
            owner: owner.to_owned(),
            client,
        })
    }
}

#[derive(Deserialize)]
struct ReadPage {
    events: Vec<ReadEvent>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pending_since: Option<time::OffsetDateTime>,
}

#[derive(Deserialize)]
struct ReadEvent {
    position: u64,
    event: Box<RawValue>,
}

#[async_trait]
impl Feed for HttpFeed {
    async fn page(&self, after: u64) -> Result<FeedPage, Error> {
        let page: ReadPage = self
            .client
            .request(
                axum::http::Method::GET,
                &format!("{}?after={after}", path(&self.owner)),
            )
            .route("/internal/{service}/events")
            .json()
            .await
            .map_err(|error: CallError| Error::Feed(format!("{}: {error}", self.owner)))?;
        Ok(FeedPage {
            events: page
                .events
                .into_iter()
                .map(|event| FeedEvent {
                    position: event.position,
                    envelope: event.event.get().to_owned(),
                })
                .collect(),
            pending_since: page.pending_since.map(SystemTime::from),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use agora_auth::InternalKey;
    use agora_bus::{Bus, SharedBus};
    use agora_contracts::CustomerRegistered;
    use agora_messaging::{Context, Envelope, Relay};
    use reqwest::StatusCode;
    use serde_json::Value;

    use super::*;

    /// A customer store with `count` published events, its feed served on loopback.
    async fn served(count: usize) -> (tempfile::TempDir, Db, Vec<Envelope>, String, InternalKey) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::connect(&format!("sqlite://{}", dir.path().join("c.db").display()))
            .await
            .unwrap();
        db.migrate_messaging().await.unwrap();
        let events: Vec<Envelope> = (0..count)
            .map(|n| {
                let event = CustomerRegistered {
                    customer_id: uuid::Uuid::now_v7(),
                    name: format!("Customer {n}"),
                    email: format!("c{n}@example.org"),
                    registered_at: time::OffsetDateTime::now_utc(),
                    version: 1,
                };
                Envelope::new(&event, &Context::new(format!("flow-{n}"))).unwrap()
            })
            .collect();
        let mut tx = db.begin().await.unwrap();
        for event in &events {
            Outbox::append(&mut tx, event).await.unwrap();
        }
        tx.commit().await.unwrap();
        let bus = agora_bus::embedded::EmbeddedBus::open(dir.path().join("bus.db"))
            .await
            .unwrap();
        bus.ensure_stream(&agora_messaging::stream_config("customer"))
            .await
            .unwrap();
        let bus: SharedBus = Arc::new(bus);
        Relay::publish_pending(&db, &bus, count + 1).await.unwrap();
        let plane = InternalKey::generate();
        let app = routes("customer", &db, &plane.service("customer"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (dir, db, events, url, plane)
    }

    #[tokio::test]
    async fn full_pages_are_immutable_and_the_last_one_says_what_is_pending() {
        let (_dir, db, events, url, plane) = served(FEED_PAGE + 1).await;
        let token = plane.service("ordering").token_for("customer").unwrap();
        let client = reqwest::Client::new();
        let get = async |query: &str, etag: Option<&str>| {
            let mut request = client
                .get(format!("{url}/internal/customer/events{query}"))
                .bearer_auth(&token);
            if let Some(etag) = etag {
                request = request.header("if-none-match", etag);
            }
            request.send().await.unwrap()
        };

        let first = get("", None).await;
        assert_eq!(first.status(), StatusCode::OK);
        let etag = first.headers()["etag"].to_str().unwrap().to_owned();
        assert_eq!(etag, format!("\"customer-0-{FEED_PAGE}\""));
        assert_eq!(
            first.headers()["cache-control"],
            "public, max-age=31536000, immutable"
        );
        let body: Value = first.json().await.unwrap();
        assert_eq!(body["events"].as_array().unwrap().len(), FEED_PAGE);
        assert_eq!(body["events"][0]["position"], 1);
        assert_eq!(
            body["events"][0]["event"]["id"],
            events[0].id.to_string(),
            "the envelope itself"
        );
        assert_eq!(body["events"][0]["event"]["type"], "CustomerRegistered");
        let next = body["next"].as_str().unwrap();
        assert_eq!(next, format!("/internal/customer/events?after={FEED_PAGE}"));
        assert_eq!(
            get("?after=0", Some(&etag)).await.status(),
            StatusCode::NOT_MODIFIED
        );

        let last = get(&format!("?after={FEED_PAGE}"), None).await;
        assert_eq!(last.headers()["cache-control"], "no-cache");
        assert!(last.headers().get("etag").is_none());
        let body: Value = last.json().await.unwrap();
        assert_eq!(body["events"].as_array().unwrap().len(), 1);
        assert_eq!(
            body["events"][0]["event"]["id"],
            events[FEED_PAGE].id.to_string()
        );
        assert_eq!(body["next"], Value::Null);
        assert_eq!(body["pending_since"], Value::Null);

        // A committed event the relay has not published: not in the feed, but said.
        let mut unpublished = events[0].clone();
        unpublished.id = uuid::Uuid::now_v7();
        let mut tx = db.begin().await.unwrap();
        Outbox::append(&mut tx, &unpublished).await.unwrap();
        tx.commit().await.unwrap();
        let body: Value = get(&format!("?after={FEED_PAGE}"), None)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(body["events"].as_array().unwrap().len(), 1);
        assert!(body["pending_since"].is_string(), "{body}");

        // What the rebuild reads is what the store holds.
        let feed = HttpFeed::new("ordering", "customer", &url, &plane.service("ordering")).unwrap();
        let outbox = Outbox::new(&db);
        for after in [0, 17, FEED_PAGE as u64] {
            assert_eq!(
                feed.page(after).await.unwrap(),
                outbox.feed(after, FEED_PAGE).await.unwrap()
            );
        }
    }

    #[tokio::test]
    async fn the_feed_takes_a_service_token_and_a_position_only() {
        let (_dir, _db, _events, url, plane) = served(3).await;
        let client = reqwest::Client::new();
        let events = format!("{url}/internal/customer/events");
        let token = plane.service("ordering").token_for("customer").unwrap();
        let answer = client.get(&events).send().await.unwrap();
        assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
        let wrong = plane.service("ordering").token_for("catalog").unwrap();
        let answer = client.get(&events).bearer_auth(wrong).send().await.unwrap();
        assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
        for bad in ["x", "-1", "1.5", "", "18446744073709551616", "+1"] {
            let answer = client
                .get(format!("{events}?after={bad}"))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap();
            assert_eq!(
                answer.status(),
                StatusCode::UNPROCESSABLE_ENTITY,
                "after={bad}"
            );
            assert_eq!(answer.headers()["content-type"], "application/problem+json");
        }
        let beyond: Value = client
            .get(format!("{events}?after=99"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(beyond["events"], serde_json::json!([]));
    }
}
