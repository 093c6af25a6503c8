//! Fuzzing entry points (placeholder, filled in below).
