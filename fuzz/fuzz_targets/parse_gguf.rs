//! Any byte string: the parser must return Ok or Err, never panic, overflow or read out of
//! bounds. Files it accepts must survive a write -> parse round trip unchanged.
#![no_main]

use gguf::{GgufFile, GgufWriter, MappedBytes};
use libfuzzer_sys::fuzz_target;

/// Re-emits a parsed file with the writer.
fn rewrite(file: &GgufFile) -> Vec<u8> {
    let mut writer = GgufWriter::new();
    for (key, value) in file.metadata() {
        writer.add_kv(key, value.clone());
    }
    for info in file.tensors() {
        let data = file.tensor_data(info);
        assert_eq!(data.len() as u64, info.n_bytes);
        writer.add_tensor(&info.name, info.ggml_type, &info.dims, &data);
    }
    writer.to_bytes()
}

fuzz_target!(|data: &[u8]| {
    let Ok(file) = GgufFile::from_bytes(MappedBytes::from_vec(data.to_vec())) else {
        return;
    };
    // Exercise the accessors on every key.
    for (key, _) in file.metadata() {
        let _ = file.get_u32(key);
        let _ = file.get_i64(key);
        let _ = file.get_f32(key);
        let _ = file.get_str(key);
        let _ = file
            .get_array(key)
            .map(|a| (a.as_strs(), a.as_i32s(), a.as_f32s()));
    }
    for info in file.tensors() {
        let _ = info.shape();
    }
    // A legal alignment of up to 2^31 makes the writer pad by that much: true to the file,
    // but it would only measure the allocator. The parser itself allocates nothing for it.
    if file.alignment() > 1 << 16 {
        return;
    }
    let first = rewrite(&file);
    let reparsed = GgufFile::from_bytes(MappedBytes::from_vec(first.clone()))
        .expect("a file the writer made from a parsed file must parse");
    assert_eq!(reparsed.alignment(), file.alignment());
    // Offsets change (the writer packs tensors in order); everything else must not.
    let describe = |f: &GgufFile| -> Vec<_> {
        f.tensors()
            .iter()
            .map(|t| (t.name.clone(), t.ggml_type, t.dims.clone(), t.n_bytes))
            .collect()
    };
    assert_eq!(describe(&reparsed), describe(&file));
    assert_eq!(rewrite(&reparsed), first, "write(parse(x)) is not stable");
});
