//! `mtmd gguf FILE [--json | --tensor NAME --out OUT.safetensors]`

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use gguf::{GgufFile, Value};
use serde_json::{Map, Number, Value as Json, json};

#[derive(clap::Args)]
pub struct Args {
    /// The GGUF file.
    file: PathBuf,
    /// Print everything as one JSON object instead of a table.
    #[arg(long, conflicts_with = "tensor")]
    json: bool,
    /// Dequantize this tensor to f32 and write it to --out.
    #[arg(long, requires = "out", value_name = "NAME")]
    tensor: Option<String>,
    /// safetensors file for --tensor (shape = the ggml dims reversed).
    #[arg(long, requires = "tensor", value_name = "OUT.safetensors")]
    out: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<()> {
    // GgufError's message already names the file offset; prefix the path.
    let file = GgufFile::open(&args.file).with_context(|| args.file.display().to_string())?;
    if let (Some(name), Some(out)) = (&args.tensor, &args.out) {
        return extract(&file, name, out);
    }
    let text = if args.json {
        let mut s = serde_json::to_string_pretty(&to_json(&file))?;
        s.push('\n');
        s
    } else {
        describe(&file)
    };
    print_stdout(&text)
}

/// Writes to stdout, treating a closed pipe (`| head`) as success.
fn print_stdout(text: &str) -> Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

fn extract(file: &GgufFile, name: &str, out: &std::path::Path) -> Result<()> {
    let Some(info) = file.tensor(name) else {
        bail!(
            "no tensor named '{name}' (the file has {} tensors)",
            file.tensors().len()
        );
    };
    let shape = info.shape();
    let tensor = tensor::Tensor::from_mapped(info.ggml_type, &shape, file.tensor_data(info))
        .with_context(|| format!("tensor '{name}'"))?;
    let values = tensor
        .to_f32_vec()
        .with_context(|| format!("dequantizing tensor '{name}'"))?;
    tensor::safetensors::write_f32(out, &[(name, &shape, &values)])?;
    Ok(())
}

// ---- JSON ----------------------------------------------------------------------------

fn to_json(file: &GgufFile) -> Json {
    let metadata: Vec<Json> = file
        .metadata()
        .iter()
        .map(|(key, value)| {
            let mut entry = Map::new();
            entry.insert("key".into(), json!(key));
            entry.insert("type".into(), json!(value.value_type().name()));
            if let Value::Array(a) = value {
                entry.insert("elem_type".into(), json!(a.elem_type.name()));
            }
            entry.insert("value".into(), value_json(value));
            Json::Object(entry)
        })
        .collect();
    let tensors: Vec<Json> = file
        .tensors()
        .iter()
        .map(|t| {
            json!({
                "name": t.name,
                "type": t.ggml_type.name(),
                "shape": t.dims,
                "offset": t.offset,
                "n_bytes": t.n_bytes,
            })
        })
        .collect();
    json!({
        "version": file.version(),
        "alignment": file.alignment(),
        "data_offset": file.data_offset(),
        "metadata": metadata,
        "tensors": tensors,
    })
}

/// A float as a JSON number that parses back to the same bits; non-finite as a string.
/// `shortest` is Rust's shortest round-trip decimal of the original width, so an f32 prints
/// as `3.1415927`, not as the f64 widening `3.1415927410125732`.
fn float_json(value: f64, shortest: String) -> Json {
    if value.is_nan() {
        return json!("nan");
    }
    if value.is_infinite() {
        return json!(if value > 0.0 { "inf" } else { "-inf" });
    }
    // Re-parsing the shortest f32 decimal as f64 and letting serde_json print that f64
    // (also shortest round-trip) reproduces the same digits.
    let reparsed: f64 = shortest.parse().unwrap_or(value);
    Number::from_f64(reparsed).map_or(Json::Null, Json::Number)
}

fn value_json(value: &Value) -> Json {
    match value {
        Value::U8(v) => json!(v),
        Value::I8(v) => json!(v),
        Value::U16(v) => json!(v),
        Value::I16(v) => json!(v),
        Value::U32(v) => json!(v),
        Value::I32(v) => json!(v),
        Value::U64(v) => json!(v),
        Value::I64(v) => json!(v),
        Value::F32(v) => float_json(f64::from(*v), v.to_string()),
        Value::F64(v) => float_json(*v, v.to_string()),
        Value::Bool(v) => json!(v),
        Value::String(s) => json!(s),
        Value::Array(a) => Json::Array(a.items.iter().map(value_json).collect()),
    }
}

// ---- text ----------------------------------------------------------------------------

/// Arrays longer than this show their first items only.
const ARRAY_PREVIEW: usize = 8;
/// Strings longer than this (in chars) are cut.
const STRING_PREVIEW: usize = 120;
/// Key and name columns are at most this wide: keys have no length limit in GGUF, and a
/// width past u16::MAX would even make the formatter panic.
const NAME_COLUMN: usize = 64;

/// A key or tensor name as one table cell: control characters escaped (a name must not
/// break the table's lines), cut to `NAME_COLUMN` characters with a marker.
fn cell(name: &str) -> String {
    let mut escaped = String::with_capacity(name.len().min(4 * NAME_COLUMN));
    for c in name.chars() {
        if c.is_control() {
            escaped.extend(c.escape_default());
        } else {
            escaped.push(c);
        }
        // Enough to know it gets cut; a 1 MiB key is not copied whole.
        if escaped.len() > 4 * NAME_COLUMN {
            break;
        }
    }
    if escaped.chars().count() <= NAME_COLUMN {
        return escaped;
    }
    let mut cut: String = escaped.chars().take(NAME_COLUMN - 1).collect();
    cut.push('…');
    cut
}

fn describe(file: &GgufFile) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "GGUF v{}, {} bytes, alignment {}, data section at byte {}",
        file.version(),
        file.file_len(),
        file.alignment(),
        file.data_offset()
    );
    let _ = writeln!(s, "\nmetadata ({} keys):", file.metadata().len());
    let keys: Vec<String> = file.metadata().iter().map(|(k, _)| cell(k)).collect();
    let key_width = keys.iter().map(|k| k.chars().count()).max().unwrap_or(0);
    for (key, (_, value)) in keys.iter().zip(file.metadata()) {
        let ty = match value {
            Value::Array(a) => format!("[{}; {}]", a.elem_type, a.items.len()),
            other => other.value_type().name().to_owned(),
        };
        let _ = writeln!(s, "  {key:key_width$}  {ty:<16} {}", value_text(value));
    }
    let _ = writeln!(s, "\ntensors ({}):", file.tensors().len());
    let names: Vec<String> = file.tensors().iter().map(|t| cell(&t.name)).collect();
    let name_width = names
        .iter()
        .map(|n| n.chars().count())
        .max()
        .unwrap_or(4)
        .max(4);
    let _ = writeln!(
        s,
        "  {:name_width$}  {:<8} {:<24} {:>12} {:>12}",
        "name", "type", "ne", "bytes", "offset"
    );
    for (name, t) in names.iter().zip(file.tensors()) {
        let ne = format!("{:?}", t.dims);
        let _ = writeln!(
            s,
            "  {:name_width$}  {:<8} {:<24} {:>12} {:>12}",
            name,
            t.ggml_type.name(),
            ne,
            t.n_bytes,
            t.offset
        );
    }
    // Tensors do not overlap and lie inside the file, so this cannot overflow; saturating
    // keeps that true even if the reader's checks ever change.
    let total = file
        .tensors()
        .iter()
        .fold(0u64, |acc, t| acc.saturating_add(t.n_bytes));
    let _ = writeln!(s, "  total {total} bytes of tensor data");
    s
}

fn value_text(value: &Value) -> String {
    match value {
        Value::String(text) => {
            let n_chars = text.chars().count();
            if n_chars <= STRING_PREVIEW {
                format!("{text:?}")
            } else {
                let head: String = text.chars().take(STRING_PREVIEW).collect();
                format!("{head:?}… ({} bytes)", text.len())
            }
        }
        Value::Array(a) => {
            let shown: Vec<String> = a.items.iter().take(ARRAY_PREVIEW).map(value_text).collect();
            let more = a.items.len().saturating_sub(ARRAY_PREVIEW);
            if more == 0 {
                format!("[{}]", shown.join(", "))
            } else {
                format!("[{}, … ({more} more)]", shown.join(", "))
            }
        }
        Value::F32(v) => v.to_string(),
        Value::F64(v) => v.to_string(),
        other => value_json(other).to_string(),
    }
}
