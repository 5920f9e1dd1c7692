//! Key derivations from a namespace secret. The context strings are part of
//! the on-disk format (docs/FORMAT.md): changing one changes every id and key.

use crate::error::{Error, Result};
use crate::hash;
use crate::seal::KEY_LEN;

pub const NAMESPACE_SECRET_LEN: usize = 32;
/// BLAKE3 derive_key context for the key of chunk ids.
pub const CHUNK_ID_KEY_CONTEXT: &str = "fstore 2026-11-24 chunk id key v1";
/// BLAKE3 derive_key context for a chunk's sealing key.
pub const CHUNK_KEY_CONTEXT: &str = "fstore 2026-11-24 chunk sealing key v1";
/// The Cobblestone context every chunk is sealed with.
pub const CHUNK_CONTEXT: &[u8] = b"fstore/chunk/v1";

pub type ChunkId = [u8; 32];
pub type ChunkKey = [u8; KEY_LEN];

/// The secrets of one namespace: who holds them can compute its chunk ids and
/// chunk keys.
#[derive(Clone)]
pub struct NamespaceKeys {
    secret: [u8; NAMESPACE_SECRET_LEN],
    chunk_id_key: [u8; 32],
}

impl NamespaceKeys {
    pub fn new(secret: &[u8]) -> Result<Self> {
        let secret: [u8; NAMESPACE_SECRET_LEN] = secret.try_into().map_err(|_| {
            Error::invalid(format!(
                "a namespace secret must be {NAMESPACE_SECRET_LEN} bytes, not {}",
                secret.len()
            ))
        })?;
        let chunk_id_key = blake3::derive_key(CHUNK_ID_KEY_CONTEXT, &secret);
        Ok(Self {
            secret,
            chunk_id_key,
        })
    }

    pub fn chunk_id_key(&self) -> &[u8; 32] {
        &self.chunk_id_key
    }

    /// Keyed BLAKE3 of the plaintext: the dedup key, opaque to outsiders.
    pub fn chunk_id(&self, plain: &[u8], parallel: bool) -> ChunkId {
        let mut hasher = blake3::Hasher::new_keyed(&self.chunk_id_key);
        hash::update(&mut hasher, plain, parallel);
        *hasher.finalize().as_bytes()
    }

    /// derive_key(CHUNK_KEY_CONTEXT, secret || chunk id), first 16 bytes.
    pub fn chunk_key(&self, chunk_id: &ChunkId) -> ChunkKey {
        let mut hasher = blake3::Hasher::new_derive_key(CHUNK_KEY_CONTEXT);
        hasher.update(&self.secret);
        hasher.update(chunk_id);
        let mut key = [0u8; KEY_LEN];
        hasher.finalize_xof().fill(&mut key);
        key
    }
}

impl std::fmt::Debug for NamespaceKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NamespaceKeys { .. }")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_keys_depend_on_the_namespace() {
        let a = NamespaceKeys::new(&[1; 32]).unwrap();
        let b = NamespaceKeys::new(&[2; 32]).unwrap();
        assert_ne!(a.chunk_id(b"same", false), b.chunk_id(b"same", false));
        let id = a.chunk_id(b"same", false);
        assert_eq!(id, a.chunk_id(b"same", true));
        assert_ne!(a.chunk_key(&id), b.chunk_key(&id));
    }

    #[test]
    fn secret_must_be_32_bytes() {
        assert!(NamespaceKeys::new(&[0; 31]).is_err());
    }
}
