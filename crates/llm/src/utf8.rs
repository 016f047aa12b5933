//! Text from a byte stream that may stop inside a UTF-8 character (token pieces do).

/// Decodes the complete characters of `bytes` (invalid sequences become U+FFFD) and returns
/// them with the length of an incomplete character at the end, which the caller keeps until
/// more bytes arrive.
pub(crate) fn decode_complete(bytes: &[u8]) -> (String, usize) {
    let mut text = String::new();
    let mut rest = bytes;
    loop {
        match std::str::from_utf8(rest) {
            Ok(s) => {
                text.push_str(s);
                return (text, 0);
            }
            Err(e) => {
                let (valid, after) = rest.split_at(e.valid_up_to());
                text.push_str(std::str::from_utf8(valid).unwrap_or_default());
                match e.error_len() {
                    Some(bad) => {
                        text.push('\u{FFFD}');
                        rest = &after[bad..];
                    }
                    None => return (text, after.len()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::decode_complete;

    #[test]
    fn keeps_an_incomplete_tail_and_replaces_invalid_bytes() {
        assert_eq!(decode_complete(b"ab"), ("ab".to_string(), 0));
        // "é" is C3 A9: the lone C3 waits.
        assert_eq!(decode_complete(b"a\xC3"), ("a".to_string(), 1));
        assert_eq!(
            decode_complete(b"a\xFFb\xE2\x82"),
            ("a\u{FFFD}b".to_string(), 2)
        );
        assert_eq!(decode_complete(b""), (String::new(), 0));
    }
}
