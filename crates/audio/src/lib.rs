//! audio (stub: filled by later issues).
