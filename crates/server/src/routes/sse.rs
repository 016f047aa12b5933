//! The SSE relay of a streamed request: engine events in, OpenAI chunks out, `[DONE]` at
//! the end; the log line is written when the stream ends or the client goes away.

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
use crate::openai::{Kind, Meta};

/// State of one SSE relay; logs its line when dropped (finished or client gone).
struct Relay {
    rx: UnboundedReceiver<Event>,
    meta: Meta,
    include_usage: bool,
    pending: VecDeque<SseEvent>,
    ended: bool,
    origin: Origin,
    tokens: Option<Tokens>,
    note: &'static str,
}

impl Drop for Relay {
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

fn data(value: &Value) -> SseEvent {
    SseEvent::default().data(value.to_string())
}

impl Relay {
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
                let chunk = self.meta.chunk(json!({"content": piece}), &piece, None);
                self.pending.push_back(data(&chunk));
            }
            Event::Error(e) => {
                self.pending.push_back(data(&ApiError::from(e).body()));
                self.ended = true;
                self.note = " (engine error)";
            }
            done @ Event::Done { .. } => {
                if let Some(f) = finished(&done) {
                    self.tokens = Some(Tokens {
                        prompt: f.usage.prompt_tokens,
                        generated: f.usage.completion_tokens,
                    });
                    let last = self.meta.chunk(json!({}), "", Some(f.finish));
                    self.pending.push_back(data(&last));
                    if self.include_usage {
                        self.pending.push_back(data(&self.meta.usage_chunk(&f)));
                    }
                }
                self.pending.push_back(SseEvent::default().data("[DONE]"));
                self.ended = true;
            }
        }
    }
}

pub(super) fn sse_response(
    rx: UnboundedReceiver<Event>,
    first: Event,
    meta: Meta,
    include_usage: bool,
    origin: Origin,
) -> Response {
    let mut relay = Relay {
        rx,
        meta,
        include_usage,
        pending: VecDeque::new(),
        ended: false,
        origin,
        tokens: None,
        note: "",
    };
    if relay.meta.kind == Kind::Chat {
        let role = relay
            .meta
            .chunk(json!({"role": "assistant", "content": ""}), "", None);
        relay.pending.push_back(data(&role));
    }
    relay.push(first);
    let events = futures_util::stream::unfold(relay, |mut relay| async move {
        loop {
            if let Some(event) = relay.pending.pop_front() {
                return Some((Ok::<_, Infallible>(event), relay));
            }
            if relay.ended {
                return None;
            }
            match relay.rx.recv().await {
                Some(event) => relay.push(event),
                None => {
                    relay.push(Event::Error(EngineError::Internal(ENGINE_VANISHED.into())));
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
