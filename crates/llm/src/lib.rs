//! llm (stub: filled by later issues).
