//! The SSE relay of a streamed request: engine events in, wire events out (OpenAI chunks and
//! `[DONE]` for completions, `transcript.text.*` events for transcriptions); the log line is
//! written when the stream ends or the client goes away.

use std::collections::VecDeque;
use std::convert::Infallible;

use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedReceiver;

use super::generate::{ENGINE_VANISHED, Origin, finished};
use super::middleware::{Streamed, Tokens, log_line};
use crate::api_error::ApiError;
use crate::backend::{EngineError, Event};
use crate::openai::{Finished, Kind, Meta};

/// What one streamed endpoint sends for the engine's events.
pub(super) trait Wire: Send + 'static {
    /// Events before the first engine event.
    fn opening(&mut self) -> Vec<Value> {
        Vec::new()
    }
    /// The event of one text piece.
    fn text(&mut self, piece: &str) -> Value;
    /// The closing events (`finished` is `None` only for a malformed end event).
    fn done(&mut self, finished: Option<&Finished>) -> Vec<SseEvent>;
}

/// Chat and text completions: OpenAI chunks, an optional usage chunk, then `[DONE]`.
pub(super) struct CompletionWire {
    pub meta: Meta,
    pub include_usage: bool,
}

impl Wire for CompletionWire {
    fn opening(&mut self) -> Vec<Value> {
        if self.meta.kind == Kind::Chat {
            let role = json!({"role": "assistant", "content": ""});
            vec![self.meta.chunk(role, "", None)]
        } else {
            Vec::new()
        }
    }

    fn text(&mut self, piece: &str) -> Value {
        self.meta.chunk(json!({"content": piece}), piece, None)
    }

    fn done(&mut self, finished: Option<&Finished>) -> Vec<SseEvent> {
        let mut out = Vec::new();
        if let Some(f) = finished {
            out.push(data(&self.meta.chunk(json!({}), "", Some(f.finish))));
            if self.include_usage {
                out.push(data(&self.meta.usage_chunk(f)));
            }
        }
        out.push(SseEvent::default().data("[DONE]"));
        out
    }
}

/// State of one SSE relay; logs its line when dropped (finished or client gone).
struct Relay<W: Wire> {
    rx: UnboundedReceiver<Event>,
    wire: W,
    pending: VecDeque<SseEvent>,
    ended: bool,
    origin: Origin,
    tokens: Option<Tokens>,
    note: &'static str,
}

impl<W: Wire> Drop for Relay<W> {
    fn drop(&mut self) {
        if self.origin.log {
            let note = if self.ended {
                self.note
            } else {
                " (client disconnected)"
            };
            let o = &self.origin;
            log_line(&o.method, &o.path, 200, self.tokens, o.start, note);
        }
    }
}

pub(super) fn data(value: &Value) -> SseEvent {
    SseEvent::default().data(value.to_string())
}

impl<W: Wire> Relay<W> {
    /// Ends the stream with one error event.
    fn fail(&mut self, error: ApiError, note: &'static str) {
        self.pending.push_back(data(&error.body()));
        self.ended = true;
        self.note = note;
    }

    /// The next engine event; `None` once the request's deadline has passed.
    async fn next(&mut self) -> Option<Option<Event>> {
        match self.origin.deadline() {
            Some(at) => tokio::time::timeout_at(at, self.rx.recv()).await.ok(),
            None => Some(self.rx.recv().await),
        }
    }

    /// Queues the SSE events one engine event turns into.
    fn push(&mut self, event: Event) {
        match event {
            Event::Started { prompt_tokens } => {
                self.tokens = Some(Tokens {
                    prompt: prompt_tokens,
                    generated: 0,
                });
            }
            Event::Text(piece) => {
                // Roughly a token per piece; `Done` brings the exact count (a client that
                // disconnects never gets one, and its log line keeps this estimate).
                if let Some(t) = &mut self.tokens {
                    t.generated += 1;
                }
                let event = self.wire.text(&piece);
                self.pending.push_back(data(&event));
            }
            Event::Error(e) => self.fail(ApiError::from(e), " (engine error)"),
            done @ Event::Done { .. } => {
                let f = finished(&done);
                if let Some(f) = &f {
                    self.tokens = Some(Tokens {
                        prompt: f.usage.prompt_tokens,
                        generated: f.usage.completion_tokens,
                    });
                }
                let closing = self.wire.done(f.as_ref());
                self.pending.extend(closing);
                self.ended = true;
            }
        }
    }
}

/// Relays `rx` (whose first event, already received, is `first`) as server-sent events.
pub(super) fn sse_response(
    rx: UnboundedReceiver<Event>,
    first: Event,
    mut wire: impl Wire,
    origin: Origin,
) -> Response {
    let pending = wire.opening().iter().map(data).collect();
    let mut relay = Relay {
        rx,
        wire,
        pending,
        ended: false,
        origin,
        tokens: None,
        note: "",
    };
    relay.push(first);
    let events = futures_util::stream::unfold(relay, |mut relay| async move {
        loop {
            if let Some(event) = relay.pending.pop_front() {
                return Some((Ok::<_, Infallible>(event), relay));
            }
            if relay.ended {
                return None;
            }
            match relay.next().await {
                Some(Some(event)) => relay.push(event),
                Some(None) => {
                    relay.push(Event::Error(EngineError::Internal(ENGINE_VANISHED.into())));
                }
                None => {
                    // Closing the channel stops the generation now, not at the next token.
                    relay.rx.close();
                    let error = relay.origin.timeout_error();
                    relay.fail(error, " (timeout)");
                }
            }
        }
    });
    let mut response = Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response();
    response.extensions_mut().insert(Streamed);
    response
}
