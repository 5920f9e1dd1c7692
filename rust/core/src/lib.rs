//! fstore's bulk-byte core, free of Python: BLAKE3 hashing, FastCDC chunking,
//! Cobblestone-128 sealing, namespace key derivation and the store pipeline.
//! The formats are specified in the repository's docs/FORMAT.md.

pub mod chunker;
pub mod error;
pub mod gear;
pub mod hash;
pub mod keys;
pub mod pipeline;
pub mod seal;

pub use error::{Error, Result};
