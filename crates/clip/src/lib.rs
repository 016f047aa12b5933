//! clip (stub: filled by later issues).
