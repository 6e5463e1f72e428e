//! The `text/event-stream` that `watch` answers (docs/spec.md §18): its frames, and its event
//! ids, which are change stream resume tokens a client sends back as `Last-Event-ID`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use mongodb::bson::{Document, doc};
use mongodb::change_stream::event::ResumeToken;

use crate::error::{JobsError, Result};

/// Longest `Last-Event-ID` read; a resume token encodes to about 150 characters.
const MAX_EVENT_ID: usize = 1024;

/// A position in the stream of changes: a resume token, opaque to clients (base64url of the
/// token's BSON, so it holds no newline and survives any proxy).
#[derive(Debug, Clone, PartialEq)]
pub struct EventId(ResumeToken);

impl EventId {
    /// The position of this token.
    pub fn new(token: ResumeToken) -> Self {
        Self(token)
    }

    /// The token, to resume a change stream after it.
    pub fn token(&self) -> &ResumeToken {
        &self.0
    }

    /// The text sent as an event's `id:`.
    pub fn encode(&self) -> String {
        let token = mongodb::bson::to_bson(&self.0).expect("a resume token is BSON");
        let bytes = mongodb::bson::to_vec(&doc! { "t": token }).expect("a document encodes");
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Reads a `Last-Event-ID` that [`EventId::encode`] made; anything else is a 400.
    pub fn decode(raw: &str) -> Result<Self> {
        let bogus = || JobsError::InvalidQuery("Last-Event-ID is not one this service sent".into());
        if raw.len() > MAX_EVENT_ID {
            return Err(bogus());
        }
        let bytes = URL_SAFE_NO_PAD.decode(raw).map_err(|_| bogus())?;
        let document: Document = mongodb::bson::from_slice(&bytes).map_err(|_| bogus())?;
        let token = document.get("t").cloned().ok_or_else(bogus)?;
        mongodb::bson::from_bson(token)
            .map(Self)
            .map_err(|_| bogus())
    }
}

/// One frame of the stream, as sent.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// First: how long a client waits before it reconnects, and `ready` with where the stream
    /// stands (`data`: `{"resumed": bool}`: whether it continues from `Last-Event-ID`).
    Ready {
        /// Where the stream starts (none before the process's stream reported a position).
        at: Option<EventId>,
        /// Whether it continues from the client's `Last-Event-ID`.
        resumed: bool,
    },
    /// `task`: a task changed; `data` is its summary as `list` shows it.
    Task {
        /// The change's position.
        at: EventId,
        /// The task's summary, as JSON.
        summary: std::sync::Arc<str>,
    },
    /// `reset`: changes may have been missed (the position was lost, or this client fell too
    /// far behind): reload the list, then keep reading.
    Reset,
    /// A comment that keeps proxies from closing an idle stream, with the position reached,
    /// so a reconnect after a quiet spell resumes from it.
    Ping {
        /// The position reached.
        at: Option<EventId>,
    },
    /// `end`: the stream closes before the function's time runs out; reconnect.
    End,
}

/// How long a client should wait before reconnecting (`retry:`), in milliseconds.
pub const RECONNECT_MS: u32 = 1000;

impl Frame {
    /// The frame's bytes.
    pub fn encode(&self) -> Bytes {
        let id = |at: &Option<EventId>| match at {
            Some(at) => format!("id: {}\n", at.encode()),
            None => String::new(),
        };
        Bytes::from(match self {
            Self::Ready { at, resumed } => format!(
                "retry: {RECONNECT_MS}\n{}event: ready\ndata: {{\"resumed\":{resumed}}}\n\n",
                id(at)
            ),
            Self::Task { at, summary } => {
                format!("id: {}\nevent: task\ndata: {summary}\n\n", at.encode())
            }
            Self::Reset => "event: reset\ndata: {}\n\n".to_owned(),
            Self::Ping { at } => format!("{}: ping\n\n", id(at)),
            Self::End => "event: end\ndata: {}\n\n".to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(data: &str) -> ResumeToken {
        mongodb::bson::from_bson(mongodb::bson::Bson::Document(doc! { "_data": data })).unwrap()
    }

    #[test]
    fn event_ids_round_trip_and_refuse_forgeries() {
        let id = EventId::new(token("8264A1B2C3000000012B022C0100296E5A1004"));
        assert_eq!(EventId::decode(&id.encode()).unwrap(), id);
        assert!(!id.encode().contains(['\n', '\r', ':']));
        for bogus in ["", "!!", "e30", &"A".repeat(2000)] {
            assert!(EventId::decode(bogus).is_err(), "{bogus}");
        }
    }

    #[test]
    fn frames_are_server_sent_events() {
        let at = EventId::new(token("82"));
        let summary: std::sync::Arc<str> = "{\"taskId\":\"t\"}".into();
        let task = Frame::Task {
            at: at.clone(),
            summary,
        }
        .encode();
        assert_eq!(
            task,
            format!(
                "id: {}\nevent: task\ndata: {{\"taskId\":\"t\"}}\n\n",
                at.encode()
            )
        );
        let ready = Frame::Ready {
            at: None,
            resumed: false,
        }
        .encode();
        assert_eq!(
            ready,
            "retry: 1000\nevent: ready\ndata: {\"resumed\":false}\n\n"
        );
        assert_eq!(Frame::Ping { at: None }.encode(), ": ping\n\n");
        for frame in [Frame::Reset, Frame::End, Frame::Ping { at: Some(at) }] {
            assert!(frame.encode().ends_with(b"\n\n".as_slice()));
        }
    }
}
