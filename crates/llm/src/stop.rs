//! Stop strings over streamed text.
//!
//! Generated text arrives in pieces (one per token, sometimes part of a UTF-8 character). The
//! matcher emits text as soon as it can no longer be the start of a stop string, holds back a
//! tail that might be, and on a match emits the text before the stop string (never the stop
//! string itself) and reports the stop.

/// What one [`StopMatcher::push`] produced.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StopOutput {
    /// Text that is safe to show now.
    pub text: String,
    /// Index (into the stop list) of the stop string that matched, if one did.
    pub stopped: Option<usize>,
}

impl StopOutput {
    pub fn is_stopped(&self) -> bool {
        self.stopped.is_some()
    }
}

/// A streaming stop-string matcher.
#[derive(Debug, Clone)]
pub struct StopMatcher {
    stops: Vec<String>,
    /// Text not emitted yet: always shorter than the longest stop string.
    pending: String,
    /// Bytes of an incomplete UTF-8 character from [`StopMatcher::push_bytes`].
    utf8_tail: Vec<u8>,
    stopped: Option<usize>,
}

impl StopMatcher {
    /// A matcher for `stops`; empty strings are ignored.
    pub fn new<S: Into<String>>(stops: impl IntoIterator<Item = S>) -> Self {
        Self {
            stops: stops
                .into_iter()
                .map(Into::into)
                .filter(|s| !s.is_empty())
                .collect(),
            pending: String::new(),
            utf8_tail: Vec::new(),
            stopped: None,
        }
    }

    pub fn stops(&self) -> &[String] {
        &self.stops
    }

    /// The stop string that matched, once one has.
    pub fn stopped(&self) -> Option<&str> {
        self.stopped.map(|i| self.stops[i].as_str())
    }

    /// Feeds a piece of text. After a stop, further text is swallowed.
    pub fn push(&mut self, piece: &str) -> StopOutput {
        if self.stopped.is_some() {
            return StopOutput {
                text: String::new(),
                stopped: self.stopped,
            };
        }
        self.pending.push_str(piece);
        if let Some((at, which)) = self.earliest_match() {
            let text = self.pending[..at].to_owned();
            self.pending.clear();
            self.utf8_tail.clear();
            self.stopped = Some(which);
            return StopOutput {
                text,
                stopped: Some(which),
            };
        }
        let hold = self.partial_suffix_len();
        let emit_to = self.pending.len() - hold;
        let text: String = self.pending.drain(..emit_to).collect();
        StopOutput {
            text,
            stopped: None,
        }
    }

    /// Feeds raw bytes (a token's piece may end inside a UTF-8 character): complete characters
    /// go through [`StopMatcher::push`], an incomplete trailing one waits for the next bytes.
    /// Invalid bytes become U+FFFD.
    pub fn push_bytes(&mut self, bytes: &[u8]) -> StopOutput {
        let mut buf = std::mem::take(&mut self.utf8_tail);
        buf.extend_from_slice(bytes);
        let (text, incomplete) = crate::utf8::decode_complete(&buf);
        let tail = buf[buf.len() - incomplete..].to_vec();
        let out = self.push(&text);
        if out.stopped.is_none() {
            self.utf8_tail = tail;
        }
        out
    }

    /// Ends the stream: returns whatever was held back (an incomplete UTF-8 tail as U+FFFD).
    pub fn finish(&mut self) -> String {
        let mut text = std::mem::take(&mut self.pending);
        if !self.utf8_tail.is_empty() {
            text.push_str(&String::from_utf8_lossy(&self.utf8_tail));
            self.utf8_tail.clear();
        }
        if self.stopped.is_some() {
            text.clear();
        }
        text
    }

    /// The earliest position where a stop string occurs in `pending` (ties: the longer stop).
    fn earliest_match(&self) -> Option<(usize, usize)> {
        self.stops
            .iter()
            .enumerate()
            .filter_map(|(i, stop)| self.pending.find(stop.as_str()).map(|at| (at, i)))
            .min_by(|a, b| {
                a.0.cmp(&b.0)
                    .then(self.stops[b.1].len().cmp(&self.stops[a.1].len()))
            })
    }

    /// The length of the longest tail of `pending` that is a proper prefix of some stop string.
    fn partial_suffix_len(&self) -> usize {
        let p = self.pending.as_bytes();
        let mut best = 0;
        for stop in &self.stops {
            let s = stop.as_bytes();
            let max = (s.len() - 1).min(p.len());
            for len in (best + 1..=max).rev() {
                if p[p.len() - len..] == s[..len] && self.pending.is_char_boundary(p.len() - len) {
                    best = len;
                    break;
                }
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (Vec<String>, Option<usize>, String) {
        let mut m = StopMatcher::new(stops.iter().copied());
        let mut emitted = Vec::new();
        let mut stopped = None;
        for p in pieces {
            let out = m.push(p);
            emitted.push(out.text);
            if out.stopped.is_some() {
                stopped = out.stopped;
            }
        }
        (emitted, stopped, m.finish())
    }

    #[test]
    fn no_stops_passes_through() {
        let (out, stopped, rest) = run(&[], &["a", "b"]);
        assert_eq!(out, vec!["a", "b"]);
        assert_eq!(stopped, None);
        assert_eq!(rest, "");
    }

    #[test]
    fn stop_inside_one_piece() {
        let (out, stopped, rest) = run(&["</s>"], &["Hello</s>world"]);
        assert_eq!(out, vec!["Hello"]);
        assert_eq!(stopped, Some(0));
        assert_eq!(rest, "");
    }

    #[test]
    fn stop_split_across_pieces_is_held_back() {
        let (out, stopped, _) = run(&["<|im_end|>"], &["Hi <|", "im", "_end", "|> tail"]);
        assert_eq!(out, vec!["Hi ", "", "", ""]);
        assert_eq!(stopped, Some(0));
    }

    #[test]
    fn false_start_is_released() {
        let (out, stopped, rest) = run(&["STOP"], &["ST", "OX", "S"]);
        assert_eq!(out, vec!["", "STOX", ""]);
        assert_eq!(stopped, None);
        assert_eq!(rest, "S");
    }

    #[test]
    fn earliest_of_several_stops_wins() {
        let (out, stopped, _) = run(&["World", "lo W"], &["Hello World"]);
        assert_eq!(out, vec!["Hel"]);
        assert_eq!(stopped, Some(1));
        // Same start: the longer one is reported.
        let mut m = StopMatcher::new(["ab", "abc"]);
        assert_eq!(m.push("xabc").stopped, Some(1));
    }

    #[test]
    fn multibyte_stop_and_text() {
        let (out, stopped, _) = run(&["。\n"], &["日本", "語。", "\n次"]);
        assert_eq!(out, vec!["日本", "語", ""]);
        assert_eq!(stopped, Some(0));
        // A held-back tail never splits a character.
        let (out, _, rest) = run(&["éa"], &["café", "!"]);
        assert_eq!(out, vec!["caf", "é!"]);
        assert_eq!(rest, "");
    }

    #[test]
    fn bytes_split_inside_a_character() {
        let stop = "🙂END";
        let bytes = "ok 🙂END".as_bytes();
        let mut m = StopMatcher::new([stop]);
        let mut text = String::new();
        let mut stopped = None;
        for b in bytes {
            let out = m.push_bytes(std::slice::from_ref(b));
            text.push_str(&out.text);
            stopped = stopped.or(out.stopped);
        }
        assert_eq!(text, "ok ");
        assert_eq!(stopped, Some(0));
        assert_eq!(m.stopped(), Some(stop));

        let mut m = StopMatcher::new(["x"]);
        let euro = "€".as_bytes();
        assert_eq!(m.push_bytes(&euro[..2]).text, "");
        assert_eq!(m.push_bytes(&euro[2..]).text, "€");
        assert_eq!(m.push_bytes(&[0xff, b'a']).text, "\u{fffd}a");
        assert_eq!(m.push_bytes(&euro[..1]).text, "");
        assert_eq!(m.finish(), "\u{fffd}");
    }

    #[test]
    fn after_stop_everything_is_swallowed() {
        let mut m = StopMatcher::new(["\n\n"]);
        assert_eq!(m.push("a\n").text, "a");
        let out = m.push("\nb");
        assert_eq!(out.text, "");
        assert!(out.is_stopped());
        assert_eq!(m.push("more").text, "");
        assert_eq!(m.finish(), "");
    }
}
