//! `tojson` as HF transformers defines it for chat templates: Python's
//! `json.dumps(x, ensure_ascii=False, indent=indent, separators=separators, sort_keys=sort_keys)`.
//!
//! minijinja's stock `tojson` is HTML-safe (it writes `'`, `<`, `>` and `&` as `\u00XX`), which
//! changes the prompt text a model was trained on, so templates get this one instead.

use minijinja::value::{Kwargs, ValueKind};
use minijinja::{Error, ErrorKind, Value};

/// Formatting options, as Python's `json.dumps` takes them.
#[derive(Debug, Clone)]
pub struct DumpOptions {
    /// `None`: one line. `Some(s)`: newline before each item, `s` repeated per nesting level.
    pub indent: Option<String>,
    pub item_separator: String,
    pub key_separator: String,
    pub sort_keys: bool,
    pub ensure_ascii: bool,
}

impl DumpOptions {
    /// Python's defaults for the given indent (`", "` without indent, `","` with one).
    pub fn new(indent: Option<String>) -> Self {
        let item_separator = if indent.is_some() { "," } else { ", " }.to_owned();
        Self {
            indent,
            item_separator,
            key_separator: ": ".to_owned(),
            sort_keys: false,
            ensure_ascii: false,
        }
    }
}

/// The `tojson` filter: `value | tojson(indent=2, sort_keys=true, ...)`.
pub fn tojson_filter(value: &Value, kwargs: Kwargs) -> Result<Value, Error> {
    let indent = match kwargs.get::<Option<Value>>("indent")? {
        None => None,
        Some(v) if v.is_none() || v.is_undefined() => None,
        Some(v) => Some(indent_string(&v)?),
    };
    let mut opts = DumpOptions::new(indent);
    if let Some(seps) = kwargs.get::<Option<Value>>("separators")?
        && !seps.is_none()
    {
        let parts: Vec<String> = seps
            .try_iter()?
            .map(|s| s.as_str().map(str::to_owned))
            .collect::<Option<_>>()
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::InvalidOperation,
                    "tojson: separators must be two strings",
                )
            })?;
        let [item, key] = <[String; 2]>::try_from(parts).map_err(|_| {
            Error::new(
                ErrorKind::InvalidOperation,
                "tojson: separators must be two strings",
            )
        })?;
        opts.item_separator = item;
        opts.key_separator = key;
    }
    if let Some(sort) = kwargs.get::<Option<bool>>("sort_keys")? {
        opts.sort_keys = sort;
    }
    if let Some(ascii) = kwargs.get::<Option<bool>>("ensure_ascii")? {
        opts.ensure_ascii = ascii;
    }
    kwargs.assert_all_used()?;
    let mut out = String::new();
    dump(value, &opts, 0, &mut out)?;
    Ok(Value::from(out))
}

/// Python accepts an int (that many spaces) or a string as `indent`.
fn indent_string(v: &Value) -> Result<String, Error> {
    if let Some(s) = v.as_str() {
        return Ok(s.to_owned());
    }
    let n = v.as_i64().ok_or_else(|| {
        Error::new(
            ErrorKind::InvalidOperation,
            "tojson: indent must be an integer or a string",
        )
    })?;
    // Python treats a negative indent as 0; cap it so a template cannot ask for gigabytes.
    Ok(" ".repeat(n.clamp(0, 64) as usize))
}

/// Writes `value` as Python's `json.dumps` would.
pub fn dump(
    value: &Value,
    opts: &DumpOptions,
    level: usize,
    out: &mut String,
) -> Result<(), Error> {
    match value.kind() {
        // Jinja2's Undefined is not serializable in Python; writing null is the forgiving choice.
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
        ValueKind::Number => {
            if value.is_integer() {
                out.push_str(&value.to_string());
            } else {
                let f = f64::try_from(value.clone())?;
                out.push_str(&python_float_repr(f));
            }
        }
        ValueKind::String => {
            write_string(value.as_str().unwrap_or_default(), opts.ensure_ascii, out)
        }
        ValueKind::Bytes => write_string(
            &String::from_utf8_lossy(value.as_bytes().unwrap_or_default()),
            opts.ensure_ascii,
            out,
        ),
        ValueKind::Map => dump_map(value, opts, level, out)?,
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = value.try_iter()?.collect();
            dump_container('[', ']', items.len(), opts, level, out, |i, out| {
                dump(&items[i], opts, level + 1, out)
            })?;
        }
        // Plain objects and anything newer: their string form, as a JSON string.
        _ => write_string(&value.to_string(), opts.ensure_ascii, out),
    }
    Ok(())
}

fn dump_map(
    value: &Value,
    opts: &DumpOptions,
    level: usize,
    out: &mut String,
) -> Result<(), Error> {
    let mut entries: Vec<(String, Value)> = Vec::new();
    for key in value.try_iter()? {
        let item = value.get_item(&key)?;
        entries.push((key_string(&key), item));
    }
    if opts.sort_keys {
        entries.sort_by(|a, b| a.0.cmp(&b.0));
    }
    dump_container('{', '}', entries.len(), opts, level, out, |i, out| {
        let (key, item) = &entries[i];
        write_string(key, opts.ensure_ascii, out);
        out.push_str(&opts.key_separator);
        dump(item, opts, level + 1, out)
    })
}

/// Python's json turns non-string keys into strings (`True` -> `"true"`, `None` -> `"null"`).
fn key_string(key: &Value) -> String {
    match key.kind() {
        ValueKind::String => key.as_str().unwrap_or_default().to_owned(),
        ValueKind::Bool => if key.is_true() { "true" } else { "false" }.to_owned(),
        ValueKind::None | ValueKind::Undefined => "null".to_owned(),
        ValueKind::Number if !key.is_integer() => f64::try_from(key.clone())
            .map(python_float_repr)
            .unwrap_or_else(|_| key.to_string()),
        _ => key.to_string(),
    }
}

fn dump_container(
    open: char,
    close: char,
    len: usize,
    opts: &DumpOptions,
    level: usize,
    out: &mut String,
    mut item: impl FnMut(usize, &mut String) -> Result<(), Error>,
) -> Result<(), Error> {
    out.push(open);
    if len == 0 {
        out.push(close);
        return Ok(());
    }
    for i in 0..len {
        if i > 0 {
            out.push_str(&opts.item_separator);
        }
        if let Some(indent) = &opts.indent {
            out.push('\n');
            push_indent(indent, level + 1, out);
        }
        item(i, out)?;
    }
    if let Some(indent) = &opts.indent {
        out.push('\n');
        push_indent(indent, level, out);
    }
    out.push(close);
    Ok(())
}

fn push_indent(indent: &str, level: usize, out: &mut String) {
    for _ in 0..level {
        out.push_str(indent);
    }
}

/// A JSON string literal with Python's escapes (lowercase hex, `\u00XX` for other controls).
pub fn write_string(s: &str, ensure_ascii: bool, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c if ensure_ascii && !c.is_ascii() => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{:04x}", unit));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Python's `repr(float)`: the shortest round-trip digits, positional for decimal exponents in
/// [-4, 16), scientific (`1e+16`, `2.5e-05`) otherwise, and always a `.0` on integral values.
pub fn python_float_repr(f: f64) -> String {
    if f.is_nan() {
        return "NaN".to_owned();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.to_owned();
    }
    // Rust's `{:e}` gives the shortest round-trip digits as `d.ddde±x`.
    let sci = format!("{:e}", f.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let sign = if f.is_sign_negative() { "-" } else { "" };
    if (-4..16).contains(&exp) {
        let n = digits.len() as i32;
        let body = if exp < 0 {
            format!("0.{}{}", "0".repeat((-exp - 1) as usize), digits)
        } else if exp + 1 >= n {
            format!("{}{}.0", digits, "0".repeat((exp + 1 - n) as usize))
        } else {
            let point = (exp + 1) as usize;
            format!("{}.{}", &digits[..point], &digits[point..])
        };
        format!("{sign}{body}")
    } else {
        let frac = &digits[1..];
        let mant = if frac.is_empty() {
            digits[..1].to_owned()
        } else {
            format!("{}.{}", &digits[..1], frac)
        };
        let exp_sign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{mant}e{exp_sign}{:02}", exp.abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dumps(json: &str, opts: &DumpOptions) -> String {
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        let mut out = String::new();
        dump(&Value::from(minijinja::value::Serde(&v)), opts, 0, &mut out).unwrap();
        out
    }

    #[test]
    fn float_repr_matches_python() {
        let cases = [
            (1.0, "1.0"),
            (-0.0, "-0.0"),
            (0.1, "0.1"),
            (100.0, "100.0"),
            (1.5, "1.5"),
            (123456.789, "123456.789"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (2.5e-7, "2.5e-07"),
            (1e15, "1000000000000000.0"),
            (1e16, "1e+16"),
            (1.25e22, "1.25e+22"),
            (1e100, "1e+100"),
            (f64::INFINITY, "Infinity"),
            (-3.75, "-3.75"),
        ];
        for (f, want) in cases {
            assert_eq!(python_float_repr(f), want, "{f}");
        }
    }

    #[test]
    fn one_line_like_json_dumps() {
        // json.dumps({...}, ensure_ascii=False)
        let got = dumps(
            r#"{"b": [1, 2.0, true, null], "a": "x'<&>\"é\n\u0001", "e": {}, "f": []}"#,
            &DumpOptions::new(None),
        );
        assert_eq!(
            got,
            r#"{"b": [1, 2.0, true, null], "a": "x'<&>\"é\n\u0001", "e": {}, "f": []}"#
        );
    }

    #[test]
    fn indented_like_json_dumps() {
        // json.dumps({"a": [1, {"b": "c"}], "d": {}}, indent=2)
        let got = dumps(
            r#"{"a": [1, {"b": "c"}], "d": {}}"#,
            &DumpOptions::new(Some("  ".into())),
        );
        assert_eq!(
            got,
            "{\n  \"a\": [\n    1,\n    {\n      \"b\": \"c\"\n    }\n  ],\n  \"d\": {}\n}"
        );
    }

    #[test]
    fn ensure_ascii_and_sort_keys() {
        let mut opts = DumpOptions::new(None);
        opts.ensure_ascii = true;
        opts.sort_keys = true;
        assert_eq!(
            dumps(r#"{"z": "é😀", "a": 1}"#, &opts),
            r#"{"a": 1, "z": "\u00e9\ud83d\ude00"}"#
        );
    }
}
