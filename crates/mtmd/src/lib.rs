//! mtmd (stub: filled by later issues).
