//! Minimal safetensors reader/writer (f32 and the plain integer types) for references and dumps.
