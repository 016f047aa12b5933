//! `/metrics`: the HTTP counters this layer keeps plus the engine's, in Prometheus' text
//! exposition format (version 0.0.4).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

use super::backend::EngineMetrics;

/// Requests answered, by route and status.
#[derive(Debug, Default)]
pub struct HttpCounters {
    by_route: Mutex<BTreeMap<(String, u16), u64>>,
}

impl HttpCounters {
    pub fn record(&self, path: &str, status: u16) {
        // A poisoned lock only means another request panicked mid-increment: keep counting.
        let mut map = self.by_route.lock().unwrap_or_else(|p| p.into_inner());
        *map.entry((path.to_owned(), status)).or_default() += 1;
    }

    fn snapshot(&self) -> Vec<((String, u16), u64)> {
        let map = self.by_route.lock().unwrap_or_else(|p| p.into_inner());
        map.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }
}

/// The exposition text; `engine` is `None` while the model loads (engine series then read 0).
pub fn render(http: &HttpCounters, engine: Option<EngineMetrics>, slots_total: usize) -> String {
    let mut out = String::new();
    out.push_str("# HELP mtmd_http_requests_total HTTP requests answered, by route and status.\n");
    out.push_str("# TYPE mtmd_http_requests_total counter\n");
    for ((path, status), n) in http.snapshot() {
        let path = escape_label(&path);
        let _ = writeln!(
            out,
            "mtmd_http_requests_total{{path=\"{path}\",status=\"{status}\"}} {n}"
        );
    }
    let m = engine.unwrap_or_default();
    let series: [(&str, &str, &str, f64); 18] = [
        (
            "mtmd_requests_finished_total",
            "counter",
            "Generation requests finished (done or failed).",
            m.requests_finished as f64,
        ),
        (
            "mtmd_prompt_tokens_total",
            "counter",
            "Prompt tokens of finished requests, image and audio tokens included.",
            m.prompt_tokens as f64,
        ),
        (
            "mtmd_prompt_tokens_evaluated_total",
            "counter",
            "Prompt tokens evaluated (not reused from a slot's KV cache).",
            m.prompt_tokens_evaluated as f64,
        ),
        (
            "mtmd_generated_tokens_total",
            "counter",
            "Tokens generated.",
            m.generated_tokens as f64,
        ),
        (
            "mtmd_prompt_seconds_total",
            "counter",
            "Time spent evaluating prompts, media encoding included.",
            m.prompt_seconds,
        ),
        (
            "mtmd_generation_seconds_total",
            "counter",
            "Time spent generating tokens.",
            m.generation_seconds,
        ),
        (
            "mtmd_images_encoded_total",
            "counter",
            "Image chunks (images or tiles) run through the vision encoder.",
            m.images_encoded as f64,
        ),
        (
            "mtmd_image_encode_seconds_total",
            "counter",
            "Time spent in the vision encoder.",
            m.image_encode_seconds,
        ),
        (
            "mtmd_audio_encoded_total",
            "counter",
            "Audio chunks (windows of at most 30 s) run through the audio encoder.",
            m.audio_encoded as f64,
        ),
        (
            "mtmd_audio_encode_seconds_total",
            "counter",
            "Time spent in the audio encoder.",
            m.audio_encode_seconds,
        ),
        (
            "mtmd_media_cache_hits_total",
            "counter",
            "Media chunks whose embeddings came from the media cache.",
            m.media_cache_hits as f64,
        ),
        (
            "mtmd_media_cache_bytes",
            "gauge",
            "Bytes held by the media cache.",
            m.media_cache_bytes as f64,
        ),
        (
            "mtmd_queue_depth",
            "gauge",
            "Requests waiting for a slot.",
            m.queue_depth as f64,
        ),
        (
            "mtmd_slots_busy",
            "gauge",
            "Slots generating now.",
            m.slots_busy as f64,
        ),
        (
            "mtmd_slots_total",
            "gauge",
            "Slots (--parallel).",
            slots_total as f64,
        ),
        (
            "mtmd_kv_pool_cells",
            "gauge",
            "KV cells shared by the slots (--kv-pool).",
            m.kv_pool_cells as f64,
        ),
        (
            "mtmd_kv_pool_cells_used",
            "gauge",
            "KV cells leased to slots (running requests and kept prefixes).",
            m.kv_pool_cells_used as f64,
        ),
        (
            "mtmd_kv_evictions_total",
            "counter",
            "Idle slots' cached prefixes dropped to make room in the KV pool.",
            m.kv_evictions as f64,
        ),
    ];
    for (name, kind, help, value) in series {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    }
    let histograms = [
        (
            "mtmd_step_sequences",
            "Sequences decoded together per scheduler step (continuous batching).",
            &m.step_sequences,
        ),
        (
            "mtmd_encode_batch_chunks",
            "Media chunks (images, tiles, audio windows) per batched encoder pass.",
            &m.encode_batch_chunks,
        ),
        (
            "mtmd_queue_wait_seconds",
            "Time requests waited in the queue for a slot.",
            &m.queue_wait_seconds,
        ),
        (
            "mtmd_time_to_first_token_seconds",
            "Time from a request's arrival to its first generated token.",
            &m.time_to_first_token_seconds,
        ),
    ];
    for (name, help, h) in histograms {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (b, c) in h.bounds.iter().zip(&h.cumulative) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {c}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", h.count);
        let _ = writeln!(out, "{name}_sum {}\n{name}_count {}", h.sum, h.count);
    }
    out
}

fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_help_type_and_values() {
        let http = HttpCounters::default();
        http.record("/v1/chat/completions", 200);
        http.record("/v1/chat/completions", 200);
        http.record("/v1/models", 401);
        let mut ttft = crate::backend::Histogram::with_bounds(&[0.1, 1.0]);
        ttft.observe(0.05);
        ttft.observe(0.5);
        ttft.observe(3.0);
        let engine = EngineMetrics {
            images_encoded: 3,
            prompt_seconds: 1.5,
            time_to_first_token_seconds: ttft,
            ..Default::default()
        };
        let text = render(&http, Some(engine), 4);
        assert!(text.contains(
            "mtmd_http_requests_total{path=\"/v1/chat/completions\",status=\"200\"} 2\n"
        ));
        assert!(text.contains("mtmd_http_requests_total{path=\"/v1/models\",status=\"401\"} 1\n"));
        assert!(
            text.contains(
                "# TYPE mtmd_images_encoded_total counter\nmtmd_images_encoded_total 3\n"
            )
        );
        assert!(text.contains("mtmd_prompt_seconds_total 1.5\n"));
        assert!(text.contains("# TYPE mtmd_slots_total gauge\nmtmd_slots_total 4\n"));
        assert!(text.contains(
            "# TYPE mtmd_time_to_first_token_seconds histogram\n\
             mtmd_time_to_first_token_seconds_bucket{le=\"0.1\"} 1\n\
             mtmd_time_to_first_token_seconds_bucket{le=\"1\"} 2\n\
             mtmd_time_to_first_token_seconds_bucket{le=\"+Inf\"} 3\n\
             mtmd_time_to_first_token_seconds_sum 3.55\n\
             mtmd_time_to_first_token_seconds_count 3\n"
        ));
        // Every sample line is `name[{labels}] number`.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap_or_default();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }
}
