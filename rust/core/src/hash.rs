//! BLAKE3 in its three modes, over slices and files.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use crate::error::{Error, Result};

pub const HASH_LEN: usize = blake3::OUT_LEN;

/// Below this size `update_rayon` costs more than it saves (measured by the
/// blake3 authors and on this project's machines: about 128 KiB).
pub const RAYON_THRESHOLD: usize = 128 * 1024;

/// Feed `data` to `hasher`; with `parallel`, on all cores when it is large
/// enough to pay.
pub fn update(hasher: &mut blake3::Hasher, data: &[u8], parallel: bool) {
    if parallel && data.len() >= RAYON_THRESHOLD {
        hasher.update_rayon(data);
    } else {
        hasher.update(data);
    }
}

/// The first `length` bytes of the extended output of `hasher`.
pub fn finalize_len(hasher: &blake3::Hasher, length: usize) -> Vec<u8> {
    let mut out = vec![0u8; length];
    hasher.finalize_xof().fill(&mut out);
    out
}

pub fn keyed_hasher(key: &[u8]) -> Result<blake3::Hasher> {
    let key: &[u8; 32] = key
        .try_into()
        .map_err(|_| Error::invalid(format!("a BLAKE3 key must be 32 bytes, not {}", key.len())))?;
    Ok(blake3::Hasher::new_keyed(key))
}

pub fn hash(data: &[u8], length: usize, parallel: bool) -> Vec<u8> {
    let mut hasher = blake3::Hasher::new();
    update(&mut hasher, data, parallel);
    finalize_len(&hasher, length)
}

pub fn keyed_hash(key: &[u8], data: &[u8], length: usize, parallel: bool) -> Result<Vec<u8>> {
    let mut hasher = keyed_hasher(key)?;
    update(&mut hasher, data, parallel);
    Ok(finalize_len(&hasher, length))
}

pub fn derive_key(context: &str, key_material: &[u8], length: usize) -> Vec<u8> {
    let mut hasher = blake3::Hasher::new_derive_key(context);
    hasher.update(key_material);
    finalize_len(&hasher, length)
}

/// BLAKE3 of a file: small files are read, large ones memory-mapped (and, with
/// `parallel`, hashed on all cores). Equal to `b3sum FILE`.
pub fn hash_file(path: &Path, length: usize, parallel: bool) -> Result<Vec<u8>> {
    let mut file = File::open(path)?;
    let size = file.metadata()?.len();
    let mut hasher = blake3::Hasher::new();
    if size < RAYON_THRESHOLD as u64 {
        let mut buf = Vec::with_capacity(size as usize + 1);
        file.read_to_end(&mut buf)?;
        hasher.update(&buf);
    } else if parallel {
        hasher.update_mmap_rayon(path)?;
    } else {
        hasher.update_mmap(path)?;
    }
    Ok(finalize_len(&hasher, length))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extended_output_extends_the_default() {
        let long = hash(b"abc", 131, false);
        assert_eq!(&long[..32], blake3::hash(b"abc").as_bytes());
    }

    #[test]
    fn keyed_hash_rejects_short_key() {
        assert!(matches!(
            keyed_hash(&[0; 31], b"x", 32, true),
            Err(Error::InvalidArgument(_))
        ));
    }

    #[test]
    fn large_input_hashed_on_threads_matches_serial() {
        let data: Vec<u8> = (0..3 * RAYON_THRESHOLD).map(|i| (i % 251) as u8).collect();
        assert_eq!(hash(&data, 32, true), blake3::hash(&data).as_bytes());
    }
}
