//! The LFS batch API client (git-lfs `docs/api/batch.md`): which objects the server lacks,
//! and the actions that upload them.
//!
//! The batch request carries the mirror's credentials (HTTP Basic); uploads and verifies use
//! exactly the headers their action gives (see `upload.rs`). 429 and 5xx answers are retried
//! with backoff, honouring `Retry-After`, within the update's deadline.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::LfsError;
use super::pointer::Pointer;
use crate::mirror::remote::HttpCredentials;
use crate::mirror::url::{mask_credentials, scrub_secrets};

/// The media type of every batch request and response.
pub const LFS_MEDIA_TYPE: &str = "application/vnd.git-lfs+json";

/// Most objects in one batch request (servers answer 413 to large ones).
pub const MAX_BATCH_OBJECTS: usize = 100;

/// Attempts of one request when the server answers 429 or 5xx, or the connection fails.
const ATTEMPTS: u32 = 5;

/// The first wait between attempts; doubled each time, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// The longest `Retry-After` honoured; a longer one fails the update (retried later).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(120);

/// An action is taken as expired this long before the time the server gave.
const EXPIRY_MARGIN: Duration = Duration::from_secs(5);

/// The part of a server's error text kept in messages.
const MAX_MESSAGE: usize = 300;

/// One mirror's LFS server for one update.
pub struct Client {
    pub(super) http: reqwest::Client,
    /// `lfs_url` without a trailing slash.
    endpoint: String,
    pub(super) credentials: Option<HttpCredentials>,
    pub(super) deadline: Instant,
}

#[derive(Serialize)]
struct BatchRequest<'a> {
    operation: &'static str,
    transfers: [&'static str; 1],
    objects: Vec<ObjectSpec<'a>>,
}

#[derive(Serialize)]
pub(super) struct ObjectSpec<'a> {
    pub oid: &'a str,
    pub size: u64,
}

#[derive(Deserialize)]
struct BatchResponse {
    /// Absent means basic (dulwich's server leaves it out).
    transfer: Option<String>,
    #[serde(default)]
    objects: Vec<ObjectResponse>,
}

/// What the server said about one object.
#[derive(Deserialize)]
pub struct ObjectResponse {
    pub oid: String,
    #[serde(default)]
    pub authenticated: Option<bool>,
    /// None: the server has the object already.
    pub actions: Option<Actions>,
    pub error: Option<ObjectError>,
}

#[derive(Deserialize)]
pub struct ObjectError {
    pub code: u16,
    #[serde(default)]
    pub message: String,
}

#[derive(Deserialize)]
pub struct Actions {
    pub upload: Option<Action>,
    pub verify: Option<Action>,
}

/// An upload or verify action. Its headers usually hold a token: never printed.
#[derive(Deserialize, Clone)]
pub struct Action {
    pub href: String,
    /// rudolfs sends `"header": null`.
    #[serde(default)]
    pub header: Option<HashMap<String, String>>,
    pub expires_in: Option<i64>,
    pub expires_at: Option<String>,
}

impl Action {
    /// Returns true if the action is expired, or about to be, `received` being when the
    /// batch answer came. `expires_in` wins over `expires_at`, as the spec says.
    pub fn expired(&self, received: Instant) -> bool {
        if let Some(seconds) = self.expires_in {
            let lifetime = Duration::from_secs(seconds.max(0).unsigned_abs());
            return Instant::now() + EXPIRY_MARGIN >= crate::clock::later(received, lifetime);
        }
        if let Some(at) = &self.expires_at
            && let Ok(at) = humantime::parse_rfc3339_weak(at.trim_end_matches('Z'))
        {
            return SystemTime::now() + EXPIRY_MARGIN >= at;
        }
        false
    }

    /// Returns true if the action's headers carry their own `Authorization`.
    pub fn has_authorization(&self) -> bool {
        self.header
            .as_ref()
            .is_some_and(|h| h.keys().any(|k| k.eq_ignore_ascii_case("authorization")))
    }
}

/// Returns `href` as messages show it: user info masked, query (signatures, tokens) cut.
pub fn display_href(href: &str) -> String {
    let cut = href.split(['?', '#']).next().unwrap_or_default();
    mask_credentials(cut)
}

impl Client {
    pub fn new(
        endpoint: &str,
        credentials: Option<HttpCredentials>,
        deadline: Instant,
    ) -> Result<Client, LfsError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(30))
            .read_timeout(Duration::from_secs(300))
            .user_agent(concat!("pushmirror/", env!("CARGO_PKG_VERSION")))
            // Redirects would carry headers to places the action did not name.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| LfsError::Client {
                source: e.without_url(),
            })?;
        Ok(Client {
            http,
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            credentials,
            deadline,
        })
    }

    /// Returns what the server says of each of `objects` (at most [`MAX_BATCH_OBJECTS`]).
    pub async fn batch(&self, objects: &[&Pointer]) -> Result<Vec<ObjectResponse>, LfsError> {
        let url = format!("{}/objects/batch", self.endpoint);
        let what = format!("the LFS batch request to {}", display_href(&url));
        let body = BatchRequest {
            operation: "upload",
            transfers: ["basic"],
            objects: objects
                .iter()
                .map(|p| ObjectSpec {
                    oid: &p.oid,
                    size: p.size,
                })
                .collect(),
        };
        let body = serde_json::to_vec(&body).map_err(|e| LfsError::BadResponse {
            what: what.clone(),
            reason: e.to_string(),
        })?;
        let response = self
            .send(
                &what,
                || {
                    let request = self
                        .http
                        .post(&url)
                        .header(reqwest::header::ACCEPT, LFS_MEDIA_TYPE)
                        .header(reqwest::header::CONTENT_TYPE, LFS_MEDIA_TYPE)
                        .body(body.clone());
                    Ok(self.with_credentials(request))
                },
                || None,
            )
            .await?;
        let bytes = response.bytes().await.map_err(|e| LfsError::Http {
            what: what.clone(),
            source: e.without_url(),
        })?;
        let parsed: BatchResponse =
            serde_json::from_slice(&bytes).map_err(|e| LfsError::BadResponse {
                what: what.clone(),
                reason: format!("not a batch response: {e}"),
            })?;
        if let Some(transfer) = parsed.transfer.filter(|t| t != "basic") {
            return Err(LfsError::BadResponse {
                what,
                reason: format!("the server chose the transfer adapter {transfer:?}, not basic"),
            });
        }
        Ok(parsed.objects)
    }

    /// Adds the mirror's credentials to `request`, if it has any.
    pub(super) fn with_credentials(
        &self,
        request: reqwest::RequestBuilder,
    ) -> reqwest::RequestBuilder {
        match &self.credentials {
            Some(c) => request.basic_auth(&c.username, Some(c.password.expose_secret())),
            None => request,
        }
    }

    /// Returns `text` with the mirror's password scrubbed, URLs masked and cut short.
    pub(super) fn scrub(&self, text: &str) -> String {
        let secrets: Vec<_> = self.credentials.iter().map(|c| &c.password).collect();
        let text = mask_credentials(&scrub_secrets(text, &secrets));
        let mut end = text.len().min(MAX_MESSAGE);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let mut out = text[..end].trim().to_owned();
        if end < text.len() {
            out.push('…');
        }
        out
    }

    /// Sends the request `make` builds until it gets an answer that is not 429 or 5xx, or
    /// attempts run out; returns a success, else the error for the last answer. Connection
    /// failures are retried the same way, unless `fatal` names an error that no retry
    /// mends (an object that does not match its oid).
    pub(super) async fn send(
        &self,
        what: &str,
        mut make: impl FnMut() -> Result<reqwest::RequestBuilder, LfsError>,
        fatal: impl Fn() -> Option<LfsError>,
    ) -> Result<reqwest::Response, LfsError> {
        let mut backoff = FIRST_BACKOFF;
        for attempt in 1..=ATTEMPTS {
            let last = attempt == ATTEMPTS;
            let sent = make()?.send().await;
            if sent.is_err()
                && let Some(error) = fatal()
            {
                return Err(error);
            }
            let wait = match sent {
                Ok(response) if response.status().is_success() => return Ok(response),
                Ok(response) => {
                    let status = response.status();
                    let retryable = status.as_u16() == 429 || status.is_server_error();
                    let retry_after = retry_after(response.headers());
                    if !retryable || last {
                        let body = response.text().await.unwrap_or_default();
                        return Err(LfsError::Status {
                            what: what.to_owned(),
                            status: status.as_u16(),
                            message: self.scrub(&server_message(&body)),
                        });
                    }
                    match retry_after {
                        Some(wait) if wait > MAX_RETRY_AFTER => {
                            return Err(LfsError::Status {
                                what: what.to_owned(),
                                status: status.as_u16(),
                                message: format!(
                                    "the server asks to retry after {}s",
                                    wait.as_secs()
                                ),
                            });
                        }
                        Some(wait) => wait,
                        None => backoff,
                    }
                }
                Err(e) if last || !(e.is_connect() || e.is_timeout() || e.is_request()) => {
                    return Err(LfsError::Http {
                        what: what.to_owned(),
                        source: e.without_url(),
                    });
                }
                Err(_) => backoff,
            };
            if Instant::now() + wait >= self.deadline {
                return Err(LfsError::Timeout);
            }
            tracing::debug!(what, attempt, wait_ms = wait.as_millis() as u64, "retrying");
            tokio::time::sleep(wait).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        Err(LfsError::Timeout)
    }
}

/// Returns the wait a `Retry-After` header asks for: seconds, or an HTTP date.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = parse_http_date(value)?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// Parses an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the form HTTP dates take.
fn parse_http_date(value: &str) -> Option<SystemTime> {
    let mut fields = value.split_whitespace().skip(1);
    let day = fields.next()?;
    let month = fields.next()?;
    let year = fields.next()?;
    let time = fields.next()?;
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.iter().position(|m| *m == month)? + 1;
    let text = format!("{year}-{month:02}-{day:0>2}T{time}Z");
    humantime::parse_rfc3339(&text).ok()
}

/// Returns the `message` of a JSON error body (the spec's form), else the body itself.
pub(super) fn server_message(body: &str) -> String {
    #[derive(Deserialize)]
    struct Message {
        message: String,
    }
    match serde_json::from_str::<Message>(body) {
        Ok(m) => m.message,
        Err(_) => body.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_and_dates() {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(reqwest::header::RETRY_AFTER, "3".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(3)));
        headers.insert(
            reqwest::header::RETRY_AFTER,
            "Sun, 06 Nov 1994 08:49:37 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&headers), Some(Duration::ZERO));
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            humantime::parse_rfc3339("1994-11-06T08:49:37Z").ok()
        );
    }

    #[test]
    fn hrefs_are_shown_without_credentials_or_query() {
        assert_eq!(
            display_href("https://u:secret@h/x/objects/abc?X-Amz-Signature=tok#f"),
            "https://*****:*****@h/x/objects/abc"
        );
    }

    #[test]
    fn actions_expire_by_either_field() {
        let action = |expires_in, expires_at: Option<&str>| Action {
            href: String::new(),
            header: None,
            expires_in,
            expires_at: expires_at.map(str::to_owned),
        };
        let now = Instant::now();
        assert!(!action(None, None).expired(now));
        assert!(!action(Some(3600), None).expired(now));
        assert!(action(Some(0), None).expired(now));
        assert!(action(None, Some("2001-01-01T00:00:00Z")).expired(now));
        assert!(!action(None, Some("2999-01-01T00:00:00Z")).expired(now));
        // expires_in wins.
        assert!(!action(Some(3600), Some("2001-01-01T00:00:00Z")).expired(now));
    }

    #[test]
    fn responses_parse_as_servers_send_them() {
        let giftless = r#"{"transfer": "basic", "objects": [{"oid": "ab", "size": 11,
            "authenticated": true, "actions": {"upload": {"href": "http://h/u",
            "header": {"Authorization": "Bearer t"}, "expires_in": 900},
            "verify": {"href": "http://h/v", "header": {"Authorization": "Bearer t"}}}}]}"#;
        let r: BatchResponse = serde_json::from_str(giftless).unwrap();
        let upload = r.objects[0]
            .actions
            .as_ref()
            .unwrap()
            .upload
            .as_ref()
            .unwrap();
        assert!(upload.has_authorization());
        let rudolfs = r#"{"objects": [{"oid": "ab", "size": 1, "actions": {"upload":
            {"href": "http://h/u", "header": null}}}, {"oid": "cd", "size": 2}]}"#;
        let r: BatchResponse = serde_json::from_str(rudolfs).unwrap();
        assert!(r.transfer.is_none());
        assert!(r.objects[1].actions.is_none());
        assert_eq!(server_message(r#"{"message": "nope"}"#), "nope");
    }
}
