//! The chat page served at `/`: one self-contained HTML file (inline CSS and JS, no build step,
//! no CDN) compiled into the binary, so `mtmd serve` works offline and needs no asset directory.
//! It talks to the server only through the public API (`/props`, `/v1/models`, streaming
//! `/v1/chat/completions`); `tests/web/` drives it in headless Chromium.

/// The page's HTML (serve with `content-type: text/html; charset=utf-8`).
pub fn index_html() -> &'static str {
    include_str!("web/index.html")
}

#[cfg(test)]
mod tests {
    use super::index_html;

    /// The page must work with no network but the server's: any absolute URL (a CDN script, a
    /// web font, an analytics beacon) would be an external request.
    #[test]
    fn page_makes_no_external_requests() {
        let page = index_html().to_ascii_lowercase();
        for needle in ["http://", "https://", "@import"] {
            assert!(!page.contains(needle), "the chat page contains {needle:?}");
        }
        // Static links may only be inline data (a protocol-relative `//host` would go out too).
        for attr in [" src=\"", " href=\""] {
            for (at, _) in page.match_indices(attr) {
                let value = &page[at + attr.len()..];
                assert!(
                    value.starts_with("data:"),
                    "external link at byte {at}: {attr}{}",
                    value.chars().take(40).collect::<String>()
                );
            }
        }
    }

    /// The page calls the endpoints the router serves, and keeps the ids the browser test uses.
    #[test]
    fn page_uses_the_api_and_has_the_tested_controls() {
        let page = index_html();
        for needle in [
            "/v1/chat/completions",
            "/v1/models",
            "/props",
            "\"[DONE]\"",
            "id=\"file-input\"",
            "id=\"input\"",
            "id=\"send-btn\"",
            "id=\"stop-btn\"",
            "id=\"new-chat\"",
            "id=\"temperature\"",
            "id=\"max-tokens\"",
            "id=\"messages\"",
        ] {
            assert!(page.contains(needle), "the chat page lacks {needle:?}");
        }
        assert!(page.trim_start().starts_with("<!doctype html>"));
        assert!(page.trim_end().ends_with("</html>"));
    }
}
