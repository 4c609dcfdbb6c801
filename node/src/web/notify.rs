//! Notifications while the UI is open: server-sent events from the node, nothing from the
//! internet. `/events` streams, to a caseworker's page, the changes to her organisation's
//! referrals since the page opened: a new referral in the inbox, one that became overdue, a
//! step the partner took on one of ours (a decision, a completion, a withdrawal of one we
//! received). The stream looks again after every job that stored events (the engine's
//! `changes` watch) and every [`OVERDUE_CHECK`] (a deadline passes with no event).
//!
//! It compares clear headers only (the views are built without decrypting: nothing for the
//! audit log, no personal data in the notification); at most [`STREAMS_MAX`] streams run at
//! once, [`STREAMS_PER_SESSION`] per session; a stream ends when its session does (without
//! counting as use, so an open tab does not keep an idle session alive).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use passerelle_core::fold::{Overdue, Status};
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use super::{WebState, lang_of, secure_headers};
use crate::daemon::engine_thread::Watched;
use crate::i18n;

/// Most notification streams served at once (each holds one of the API's connections).
pub const STREAMS_MAX: usize = 32;
/// Most streams one session holds at once (its open tabs).
pub const STREAMS_PER_SESSION: usize = 4;
/// How often a stream looks for deadlines passed when no event arrives.
pub const OVERDUE_CHECK: Duration = Duration::from_secs(30);
/// How often a stream checks that its session is still live.
const SESSION_CHECK: Duration = Duration::from_secs(15);

/// The permits behind [`STREAMS_MAX`] and [`STREAMS_PER_SESSION`].
#[derive(Debug)]
pub struct Streams {
    all: Arc<Semaphore>,
    per_session: std::sync::Mutex<HashMap<String, usize>>,
}

impl Default for Streams {
    fn default() -> Self {
        Self {
            all: Arc::new(Semaphore::new(STREAMS_MAX)),
            per_session: std::sync::Mutex::default(),
        }
    }
}

/// A stream's place, given back when it ends.
struct Slot {
    streams: Arc<Streams>,
    user_session: String,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut counts) = self.streams.per_session.lock()
            && let Some(n) = counts.get_mut(&self.user_session)
        {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.user_session);
            }
        }
    }
}

impl Streams {
    fn take(self: &Arc<Self>, session: &str) -> Option<Slot> {
        let mut counts = self.per_session.lock().ok()?;
        let n = counts.entry(session.to_string()).or_default();
        if *n >= STREAMS_PER_SESSION {
            return None;
        }
        let permit = self.all.clone().try_acquire_owned().ok()?;
        *n += 1;
        Some(Slot {
            streams: self.clone(),
            user_session: session.to_string(),
            _permit: permit,
        })
    }
}

/// One notification: its sentence in the page's language and the page it leads to.
#[derive(Debug, Serialize, PartialEq)]
pub struct Notice {
    pub kind: &'static str,
    pub text: String,
    pub url: String,
}

/// What a stream remembers of a referral: its status and whether it was overdue.
type Seen = HashMap<String, (Status, Option<Overdue>)>;

/// `/events`: the stream of notifications for the session's page.
pub(super) async fn events(State(state): State<WebState>, headers: HeaderMap) -> Response {
    let Some(session) = state.session(&headers).await else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    if !session.role.sees_cases() {
        return StatusCode::FORBIDDEN.into_response();
    }
    let Some(slot) = state.streams.take(&session.csrf) else {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            "too many notification streams are open",
        )
            .into_response();
    };
    let Ok(first) = state.engine.watched(Vec::new()).await else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    let watcher = Watcher {
        seen: seen_of(&first),
        changes: state.engine.changes(),
        lang: lang_of(&headers),
        headers,
        state,
        _slot: slot,
    };
    let stream = futures::stream::unfold(watcher, |mut w| async move {
        let notices = w.next().await?;
        let event = Event::default()
            .event("referrals")
            .json_data(&notices)
            // A list of plain structs always serialises; an empty event then.
            .unwrap_or_default();
        Some((Ok::<_, Infallible>(event), w))
    });
    let mut r = Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response();
    // Nothing cached, as every page (`secure_headers` says so).
    secure_headers(r.headers_mut());
    r
}

struct Watcher {
    state: WebState,
    headers: HeaderMap,
    lang: &'static str,
    changes: watch::Receiver<u64>,
    seen: Seen,
    _slot: Slot,
}

impl Watcher {
    /// The next notifications, waiting until there are some; `None` ends the stream (the
    /// session ended, or the node is stopping).
    async fn next(&mut self) -> Option<Vec<Notice>> {
        let mut overdue = tokio::time::interval(OVERDUE_CHECK);
        let mut alive = tokio::time::interval(SESSION_CHECK);
        overdue.tick().await;
        alive.tick().await;
        loop {
            tokio::select! {
                changed = self.changes.changed() => changed.ok()?,
                _ = overdue.tick() => {}
                _ = alive.tick() => {
                    self.state.session_untouched(&self.headers).await?;
                    continue;
                }
            }
            self.state.session_untouched(&self.headers).await?;
            let known = self
                .seen
                .keys()
                .filter_map(|id| passerelle_core::config::Hash32::from_hex(id))
                .collect();
            let now = self.state.engine.watched(known).await.ok()?;
            let m = self.state.mechanism().await;
            let notices = notices(&self.seen, &now, m.as_deref(), self.lang);
            self.seen = seen_of(&now);
            if !notices.is_empty() {
                return Some(notices);
            }
        }
    }
}

/// What to remember of a look: the referrals still open (a closed one has no step or deadline
/// left to tell of).
fn seen_of(list: &[Watched]) -> Seen {
    list.iter()
        .filter(|w| w.view.status.is_open())
        .map(|w| (w.view.id.clone(), (w.view.status, w.view.overdue)))
        .collect()
}

/// What changed between two looks, as notifications: a referral new in the inbox, one newly
/// overdue, a step the other organisation took (the receiver's on one we sent, the sender's
/// withdrawal of one we received). Our own steps are not news to us.
pub fn notices(
    before: &Seen,
    now: &[Watched],
    m: Option<&passerelle_core::config::Mechanism>,
    lang: &str,
) -> Vec<Notice> {
    let mut out = Vec::new();
    for w in now {
        let v = &w.view;
        let what = describe(w, m, lang);
        let url = format!("/referrals/{}", v.id);
        let mut say = |kind, key: &str, args: &[(&str, &str)]| {
            out.push(Notice {
                kind,
                text: i18n::t(lang, key, args),
                url: url.clone(),
            });
        };
        match before.get(&v.id) {
            None if w.inbox => say("new", "notify-new-referral", &[("what", &what)]),
            // One of ours we just sent: not news.
            None => {}
            Some((status, was_overdue)) => {
                let by_them = if w.inbox {
                    v.status == Status::Withdrawn
                } else {
                    v.status != Status::Withdrawn
                };
                if *status != v.status && by_them {
                    let step = step_words(lang, v.status);
                    say("step", "notify-step", &[("step", &step), ("what", &what)]);
                } else if was_overdue.is_none() && v.overdue.is_some() {
                    say("overdue", "notify-overdue", &[("what", &what)]);
                }
            }
        }
    }
    out
}

/// "Health — MDM" (the category and the other organisation), in `lang`.
fn describe(w: &Watched, m: Option<&passerelle_core::config::Mechanism>, lang: &str) -> String {
    let v = &w.view;
    let category = match &v.category {
        Some(code) => m
            .and_then(|m| m.category(code).map(|c| c.name.get(lang).to_string()))
            .unwrap_or_else(|| code.clone()),
        None => i18n::t(lang, "category-sensitive", &[]),
    };
    let other = if w.inbox { &v.from_org } else { &v.to_org };
    let other = m.map_or(other.to_string(), |m| m.org_name(other).to_string());
    format!("{category} — {other}")
}

/// The step that led to `status`, as the timeline says it.
fn step_words(lang: &str, status: Status) -> String {
    let step = match status {
        Status::Acknowledged => "acknowledge",
        Status::Accepted => "accept",
        Status::Declined => "decline",
        Status::Completed => "complete",
        Status::Withdrawn => "withdraw",
        // Sent or invalid: no step of theirs leads there; the status itself.
        _ => return i18n::status(lang, status),
    };
    i18n::t(lang, &format!("timeline-referral-{step}"), &[])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn referral(id: &str, inbox: bool, status: &str, overdue: Option<&str>) -> Watched {
        let view = serde_json::from_value(serde_json::json!({
            "id": id, "case": "c", "from_org": "mas", "to_org": "mdm",
            "category": "health", "urgency": "urgent", "status": status,
            "sent_at": "2026-12-01T10:00:00Z", "acknowledged_at": null, "accepted_at": null,
            "decided_at": null, "completed_at": null, "decline_reason": null,
            "overdue": overdue, "readable": false, "shared": {}, "note": null, "invalid": null,
        }))
        .unwrap();
        Watched { view, inbox }
    }

    fn kinds(before: &[Watched], now: &[Watched]) -> Vec<(&'static str, String)> {
        notices(&seen_of(before), now, None, "en")
            .into_iter()
            .map(|n| (n.kind, n.text))
            .collect()
    }

    #[test]
    fn only_what_the_other_organisation_did_is_news() {
        // A referral new in the inbox; one we just sent is not news.
        assert_eq!(
            kinds(
                &[],
                &[
                    referral("r1", true, "sent", None),
                    referral("r2", false, "sent", None)
                ]
            ),
            [("new", "New referral received: health — mas".to_string())]
        );
        // The receiver accepted one of ours: news. We accepted one we received: not news.
        let before = [
            referral("r1", true, "sent", None),
            referral("r2", false, "sent", None),
        ];
        let now = [
            referral("r1", true, "accepted", None),
            referral("r2", false, "accepted", None),
        ];
        assert_eq!(
            kinds(&before, &now),
            [("step", "Referral accepted: health — mdm".to_string())]
        );
        // The sender withdrew one we received: news.
        let now = [
            referral("r1", true, "withdrawn", None),
            referral("r2", false, "sent", None),
        ];
        assert_eq!(kinds(&before, &now)[0].0, "step");
        // A deadline passed: news once, not again at the next look.
        let now = [referral(
            "r1",
            true,
            "sent",
            Some("acknowledgement overdue"),
        )];
        assert_eq!(
            kinds(&before, &now),
            [("overdue", "Referral overdue: health — mas".to_string())]
        );
        assert!(kinds(&now, &now).is_empty());
    }
}
