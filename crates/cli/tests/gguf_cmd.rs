//! `mtmd gguf` end to end: the built binary against the fixtures.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value as Json;

fn fixtures() -> PathBuf {
    testkit::fixture("")
}

fn quants() -> PathBuf {
    fixtures().join("quants/quants.gguf")
}

fn mtmd(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mtmd"))
        .args(args)
        .output()
        .expect("run mtmd")
}

fn mtmd_str(args: &[&str]) -> Output {
    let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
    mtmd(&args)
}

fn stdout_json(out: &Output) -> Json {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("stdout is JSON")
}

fn reference() -> Json {
    serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("quants/reference.json")).unwrap(),
    )
    .unwrap()
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fn reference_type(ty: &str) -> &str {
    if ty == "str" { "string" } else { ty }
}

/// One value printed by `--json` against reference.json's value (+ bits / utf8 hex).
fn check_value(key: &str, ty: &str, got: &Json, want: &Json, bits: Option<&str>) {
    let bits = bits.map(|b| u64::from_str_radix(b.trim_start_matches("0x"), 16).unwrap());
    match ty {
        "u8" | "u16" | "u32" | "u64" => {
            assert_eq!(got.as_u64(), Some(want.as_u64().unwrap()), "{key}")
        }
        "i8" | "i16" | "i32" | "i64" => {
            assert_eq!(got.as_i64(), Some(want.as_i64().unwrap()), "{key}")
        }
        "f32" => {
            let got = got.as_f64().unwrap_or_else(|| panic!("{key}: {got}")) as f32;
            let want = bits.map_or(want.as_f64().unwrap() as f32, |b| f32::from_bits(b as u32));
            assert_eq!(got.to_bits(), want.to_bits(), "{key}");
        }
        "f64" => {
            let got = got.as_f64().unwrap_or_else(|| panic!("{key}: {got}"));
            let want = bits.map_or(want.as_f64().unwrap(), f64::from_bits);
            assert_eq!(got.to_bits(), want.to_bits(), "{key}");
        }
        "bool" => assert_eq!(got.as_bool(), want.as_bool(), "{key}"),
        "string" => assert_eq!(
            hex(got.as_str().unwrap()),
            hex(want.as_str().unwrap()),
            "{key}"
        ),
        other => panic!("{key}: unexpected type {other}"),
    }
}

#[test]
fn json_metadata_and_tensors_match_reference() {
    let out = stdout_json(&mtmd(&[
        "gguf".as_ref(),
        quants().as_os_str(),
        "--json".as_ref(),
    ]));
    let reference = reference();
    assert_eq!(out["version"], 3);
    assert_eq!(out["alignment"], 32);
    let got = out["metadata"].as_array().unwrap();
    let want = reference["metadata"].as_array().unwrap();
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        let key = w["key"].as_str().unwrap();
        assert_eq!(g["key"].as_str(), Some(key));
        let ty = reference_type(w["type"].as_str().unwrap());
        assert_eq!(g["type"].as_str(), Some(ty), "{key}");
        match w.get("utf8_hex") {
            Some(Json::String(h)) => assert_eq!(&hex(g["value"].as_str().unwrap()), h, "{key}"),
            Some(Json::Array(hs)) => {
                for (item, h) in g["value"].as_array().unwrap().iter().zip(hs) {
                    assert_eq!(
                        Some(hex(item.as_str().unwrap()).as_str()),
                        h.as_str(),
                        "{key}"
                    );
                }
            }
            _ => {}
        }
        if ty == "array" {
            let elem = reference_type(w["elem_type"].as_str().unwrap());
            assert_eq!(g["elem_type"].as_str(), Some(elem), "{key}");
            let (gi, wi) = (
                g["value"].as_array().unwrap(),
                w["value"].as_array().unwrap(),
            );
            assert_eq!(gi.len(), wi.len(), "{key}");
            let bits = w.get("bits").and_then(Json::as_array);
            for (i, (a, b)) in gi.iter().zip(wi).enumerate() {
                let bit = bits.and_then(|bs| bs[i].as_str());
                check_value(key, elem, a, b, bit);
            }
        } else {
            check_value(
                key,
                ty,
                &g["value"],
                &w["value"],
                w.get("bits").and_then(Json::as_str),
            );
        }
    }
    let got = out["tensors"].as_array().unwrap();
    let want = reference["tensors"].as_array().unwrap();
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g["name"], w["name"]);
        assert_eq!(g["type"], w["ggml_type"]);
        assert_eq!(g["shape"], w["ne"]);
        assert_eq!(g["offset"], w["data_offset"]);
    }
}

#[test]
fn f32_values_print_shortest() {
    let out = mtmd_str(&["gguf", quants().to_str().unwrap(), "--json"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("3.1415927"), "f32 pi");
    assert!(
        !text.contains("3.1415927410125732"),
        "f32 printed as its f64 widening"
    );
}

fn all_ggufs(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            all_ggufs(&path, out);
        } else if path.extension().is_some_and(|e| e == "gguf") {
            out.push(path);
        }
    }
}

#[test]
fn every_fixture_lists_exactly_its_tensors() {
    let mut paths = Vec::new();
    all_ggufs(&fixtures(), &mut paths);
    assert!(paths.len() >= 20);
    for path in paths {
        let file = gguf::GgufFile::open(&path).unwrap();
        let names: Vec<&str> = file.tensors().iter().map(|t| t.name.as_str()).collect();
        let out = stdout_json(&mtmd(&[
            "gguf".as_ref(),
            path.as_os_str(),
            "--json".as_ref(),
        ]));
        let listed: Vec<&str> = out["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert_eq!(listed, names, "{}", path.display());
        assert_eq!(
            out["metadata"].as_array().unwrap().len(),
            file.metadata().len()
        );

        let text = mtmd(&["gguf".as_ref(), path.as_os_str()]);
        assert!(text.status.success(), "{}", path.display());
        let text = String::from_utf8(text.stdout).unwrap();
        assert!(text.contains(&format!("tensors ({}):", names.len())));
        for name in names {
            assert!(text.contains(name), "{}: {name} missing", path.display());
        }
        println!("{}: {} tensors", path.display(), listed.len());
    }
}

const REQUIRED: &[&str] = &[
    "F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K",
    "Q6_K", "IQ4_NL", "IQ4_XS",
];

#[test]
fn extracted_tensors_equal_reference_bit_exact() {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR")).join("gguf_cmd_extract");
    std::fs::create_dir_all(&tmp).unwrap();
    let reference =
        tensor::safetensors::read(fixtures().join("quants/reference.safetensors")).unwrap();
    let file = gguf::GgufFile::open(quants()).unwrap();
    let mut skipped = Vec::new();
    for info in file.tensors() {
        let out_path = tmp.join(format!("{}.safetensors", info.name));
        let out = mtmd(&[
            "gguf".as_ref(),
            quants().as_os_str(),
            "--tensor".as_ref(),
            info.name.as_ref(),
            "--out".as_ref(),
            out_path.as_os_str(),
        ]);
        let ty = info.ggml_type.name();
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let unsupported = err.contains("does not support");
            assert!(
                unsupported && !REQUIRED.contains(&ty),
                "{}: {err}",
                info.name
            );
            skipped.push(format!("{} ({ty})", info.name));
            continue;
        }
        let got = &tensor::safetensors::read(&out_path).unwrap()[&info.name];
        let want = &reference[&info.name];
        assert_eq!(got.shape, want.shape, "{}", info.name);
        assert_eq!(got.dtype, "F32");
        let (got, want) = (got.to_f32().unwrap(), want.to_f32().unwrap());
        let bad = got.iter().zip(&want).position(|(a, b)| a != b);
        if let Some(i) = bad {
            panic!(
                "{} ({ty}): element {i}: got {} want {}",
                info.name, got[i], want[i]
            );
        }
    }
    let compared = file.tensors().len() - skipped.len();
    println!("{compared} tensors bit-exact against reference.safetensors");
    assert!(compared >= 30, "the required types alone give 30+ tensors");
    if !skipped.is_empty() {
        println!(
            "NOTE: dequantization unsupported, skipped: {}",
            skipped.join(", ")
        );
    }
}

fn assert_one_line_error(out: &Output, must_contain: &str) {
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr.clone()).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains(must_contain), "{err}");
}

#[test]
fn broken_files_exit_1_with_one_line_naming_the_offset() {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR")).join("gguf_cmd_broken");
    std::fs::create_dir_all(&tmp).unwrap();
    let bytes = std::fs::read(quants()).unwrap();
    let truncated = tmp.join("truncated.gguf");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let garbage = tmp.join("garbage.gguf");
    std::fs::write(&garbage, b"this is not a gguf file at all\n").unwrap();
    let header_only = tmp.join("header.gguf");
    std::fs::write(&header_only, &bytes[..1000]).unwrap();
    for path in [&truncated, &garbage, &header_only] {
        for json in [false, true] {
            let mut args = vec!["gguf".as_ref(), path.as_os_str()];
            if json {
                args.push("--json".as_ref());
            }
            assert_one_line_error(&mtmd(&args), "byte");
        }
    }
}

#[test]
fn other_errors_are_one_line_too() {
    assert_one_line_error(&mtmd_str(&["gguf", "/nonexistent/x.gguf"]), "x.gguf");
    let q = quants();
    let q = q.to_str().unwrap();
    assert_one_line_error(
        &mtmd_str(&["gguf", q, "--tensor", "nope", "--out", "/tmp/x"]),
        "nope",
    );
    assert_one_line_error(&mtmd_str(&["gguf", q, "--tensor", "f32.a"]), "--out");
    assert_one_line_error(&mtmd_str(&["gguf", q, "--bogus"]), "--bogus");
    assert_one_line_error(&mtmd_str(&["frobnicate"]), "frobnicate");
}

#[test]
fn huge_keys_and_names_do_not_break_the_listing() {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR")).join("gguf_cmd_huge_names");
    std::fs::create_dir_all(&tmp).unwrap();
    // A 1 MiB key used to make the column width overflow the formatter (a panic).
    let mut w = gguf::GgufWriter::new();
    w.add_kv(&"k".repeat(1 << 20), gguf::Value::U8(1));
    w.add_kv("line\nbreak", gguf::Value::String("v".repeat(100_000)));
    w.add_tensor(&"t".repeat(63), gguf::GgmlType::F32, &[1], &[0; 4]);
    w.add_tensor("tab\there", gguf::GgmlType::F32, &[1], &[0; 4]);
    let path = tmp.join("huge_key.gguf");
    w.write_to(&path).unwrap();
    let out = mtmd(&["gguf".as_ref(), path.as_os_str()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains(&format!("{}…", "k".repeat(63))), "{text}");
    assert!(
        text.contains("line\\nbreak") && text.contains("tab\\there"),
        "{text}"
    );
    let longest = text.lines().map(|l| l.chars().count()).max().unwrap();
    assert!(longest < 400, "a line of {longest} chars");
    stdout_json(&mtmd(&[
        "gguf".as_ref(),
        path.as_os_str(),
        "--json".as_ref(),
    ]));

    // A 1 MiB tensor name is refused by the reader, in one short line.
    let mut w = gguf::GgufWriter::new();
    w.add_tensor(&"t".repeat(1 << 20), gguf::GgmlType::F32, &[1], &[0; 4]);
    let path = tmp.join("huge_name.gguf");
    w.write_to(&path).unwrap();
    let out = mtmd(&["gguf".as_ref(), path.as_os_str()]);
    assert_one_line_error(&out, "at most 63 allowed");
    assert!(
        out.stderr.len() < 400,
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
