//! The one error type of the core. The Python bindings map each variant to a
//! class of `fstore.errors`.

use std::io;

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A caller-supplied argument is malformed.
    #[error("{0}")]
    InvalidArgument(String),
    /// A streaming object was used after it finished or failed.
    #[error("{0} was already finalized or failed; start a new one")]
    AlreadyFinalized(&'static str),
    /// The key commitment in a sealed header does not match the key and context.
    #[error("the key or context does not match this sealed message")]
    WrongKey,
    /// A record failed AES-GCM authentication.
    #[error("sealed record {record} failed authentication: the data was altered")]
    Tampered { record: u64 },
    /// The sealed message ends before its final record is complete.
    #[error("sealed message is truncated: {0}")]
    Truncated(&'static str),
    /// Bytes follow the final record of a sealed message.
    #[error("sealed message has {extra} unexpected trailing bytes after its final record")]
    TrailingData { extra: usize },
    /// A blob does not hash to its address.
    #[error("blob does not match its address: expected {expected}, got {actual}")]
    AddressMismatch { expected: String, actual: String },
    /// A reassembled file differs from what its manifest says.
    #[error("reassembled file does not match: {0}")]
    FileMismatch(String),
    /// The message is longer than Cobblestone's 2^38 records allow.
    #[error("message exceeds the maximum sealed length (2^38 records)")]
    MessageTooLarge,
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl Error {
    pub(crate) fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidArgument(msg.into())
    }
}
