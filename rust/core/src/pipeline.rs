//! The store pipeline (plaintext in, sealed chunks out) and its reverse.

use crate::chunker::{ChunkBuffer, ChunkSpan, ChunkerParams};
use crate::error::{Error, Result};
use crate::hash;
use crate::keys::{CHUNK_CONTEXT, ChunkId, ChunkKey, NamespaceKeys};
use crate::seal;

pub type Address = [u8; 32];

/// BLAKE3 of a blob's bytes: its address.
pub fn address_of(blob: &[u8], parallel: bool) -> Address {
    let mut hasher = blake3::Hasher::new();
    hash::update(&mut hasher, blob, parallel);
    *hasher.finalize().as_bytes()
}

/// A chunk that has been cut and identified but not yet sealed. Sealing is a
/// separate step so the caller can seal straight into memory it owns.
#[derive(Debug)]
pub struct PendingChunk<'a> {
    pub span: ChunkSpan,
    pub chunk_id: ChunkId,
    pub key: ChunkKey,
    plain: &'a [u8],
    parallel: bool,
}

impl PendingChunk<'_> {
    pub fn plain(&self) -> &[u8] {
        self.plain
    }

    pub fn sealed_len(&self) -> usize {
        seal::sealed_len(self.plain.len() as u64) as usize
    }

    /// Seal into `out` (exactly `sealed_len()` bytes); returns the blob's address.
    pub fn seal_into(&self, out: &mut [u8]) -> Result<Address> {
        seal::seal_into(&self.key, CHUNK_CONTEXT, self.plain, out)?;
        Ok(address_of(out, self.parallel))
    }
}

/// FastCDC, chunk id, chunk key, seal, address; plus the whole-file BLAKE3.
#[derive(Debug)]
pub struct StorePipeline {
    keys: NamespaceKeys,
    chunks: ChunkBuffer,
    file_hasher: blake3::Hasher,
    finished: bool,
    parallel: bool,
}

impl StorePipeline {
    /// With `parallel`, the three BLAKE3 passes (whole file, chunk id, address)
    /// use all cores; chunking and sealing always run on the calling thread.
    pub fn new(keys: NamespaceKeys, params: ChunkerParams, parallel: bool) -> Self {
        Self {
            keys,
            chunks: ChunkBuffer::new(params),
            file_hasher: blake3::Hasher::new(),
            finished: false,
            parallel,
        }
    }

    pub fn push(&mut self, data: &[u8]) -> Result<()> {
        if self.finished {
            return Err(Error::AlreadyFinalized("store pipeline"));
        }
        self.chunks.push(data)?;
        hash::update(&mut self.file_hasher, data, self.parallel);
        Ok(())
    }

    /// End of input: what is held back becomes the last chunks.
    pub fn finish(&mut self) -> Result<()> {
        if self.finished {
            return Err(Error::AlreadyFinalized("store pipeline"));
        }
        self.finished = true;
        self.chunks.finish();
        Ok(())
    }

    pub fn next_chunk(&mut self) -> Option<PendingChunk<'_>> {
        let (span, plain) = self.chunks.next_chunk()?;
        let chunk_id = self.keys.chunk_id(plain, self.parallel);
        let key = self.keys.chunk_key(&chunk_id);
        Some(PendingChunk {
            span,
            chunk_id,
            key,
            plain,
            parallel: self.parallel,
        })
    }

    pub fn size(&self) -> u64 {
        self.chunks.total_in()
    }

    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// The whole-file BLAKE3, once the input has ended.
    pub fn blake3(&self) -> Option<[u8; 32]> {
        self.finished
            .then(|| *self.file_hasher.finalize().as_bytes())
    }
}

/// Verifies and opens a file's sealed chunks in order, and checks the whole file.
///
/// A chunk that fails any check changes nothing, so the caller can retry the
/// same chunk with a copy from another holder. After `finish` it refuses use.
#[derive(Debug)]
pub struct RestorePipeline {
    file_hasher: blake3::Hasher,
    size: u64,
    parallel: bool,
    finished: bool,
}

impl RestorePipeline {
    pub fn new(parallel: bool) -> Self {
        Self {
            file_hasher: blake3::Hasher::new(),
            size: 0,
            parallel,
            finished: false,
        }
    }

    fn check_active(&self) -> Result<()> {
        if self.finished {
            return Err(Error::AlreadyFinalized("restore pipeline"));
        }
        Ok(())
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Check `sealed` against `address`, then open it into `out`
    /// (exactly the chunk's plaintext length).
    pub fn open_chunk(
        &mut self,
        address: &[u8],
        key: &[u8],
        sealed: &[u8],
        out: &mut [u8],
    ) -> Result<()> {
        self.check_chunk(address, sealed, out.len() as u64)?;
        self.open_checked(key, sealed, out)
    }

    /// The checks that need no key: the blob hashes to its address, and its
    /// length is exactly what a `plain_len`-byte chunk seals to.
    pub fn check_chunk(&self, address: &[u8], sealed: &[u8], plain_len: u64) -> Result<()> {
        self.check_active()?;
        let actual = address_of(sealed, self.parallel);
        if actual.as_slice() != address {
            return Err(Error::AddressMismatch {
                expected: to_hex(address),
                actual: to_hex(&actual),
            });
        }
        let expected_len = seal::sealed_len(plain_len);
        let sealed_len = sealed.len() as u64;
        if sealed_len < expected_len {
            return Err(Error::Truncated(
                "the blob is shorter than its plaintext length requires",
            ));
        }
        if sealed_len > expected_len {
            return Err(Error::TrailingData {
                extra: (sealed_len - expected_len) as usize,
            });
        }
        Ok(())
    }

    /// Open a chunk that passed [`RestorePipeline::check_chunk`] into `out`.
    pub fn open_checked(&mut self, key: &[u8], sealed: &[u8], out: &mut [u8]) -> Result<()> {
        self.check_active()?;
        seal::open_into(key, CHUNK_CONTEXT, sealed, out)?;
        hash::update(&mut self.file_hasher, out, self.parallel);
        self.size += out.len() as u64;
        Ok(())
    }

    pub fn finish(&mut self, expected_size: u64, expected_blake3: &[u8]) -> Result<()> {
        self.check_active()?;
        self.finished = true;
        if self.size != expected_size {
            return Err(Error::FileMismatch(format!(
                "{} bytes, expected {expected_size}",
                self.size
            )));
        }
        let actual = self.file_hasher.finalize();
        if actual.as_bytes().as_slice() != expected_blake3 {
            return Err(Error::FileMismatch(format!(
                "BLAKE3 {}, expected {}",
                actual.to_hex(),
                to_hex(expected_blake3)
            )));
        }
        Ok(())
    }
}

pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        blake3::Hasher::new_derive_key("fstore test data")
            .finalize_xof()
            .fill(&mut out);
        out
    }

    fn store(
        pipeline: &mut StorePipeline,
        input: &[u8],
        piece: usize,
    ) -> Vec<(PendingMeta, Vec<u8>)> {
        let mut out = Vec::new();
        let mut drain = |p: &mut StorePipeline| {
            while let Some(chunk) = p.next_chunk() {
                let mut sealed = vec![0u8; chunk.sealed_len()];
                let address = chunk.seal_into(&mut sealed).unwrap();
                out.push((
                    PendingMeta {
                        span: chunk.span,
                        key: chunk.key,
                        address,
                    },
                    sealed,
                ));
            }
        };
        for part in input.chunks(piece.max(1)) {
            pipeline.push(part).unwrap();
            drain(pipeline);
        }
        pipeline.finish().unwrap();
        drain(pipeline);
        out
    }

    struct PendingMeta {
        span: ChunkSpan,
        key: ChunkKey,
        address: Address,
    }

    #[test]
    fn store_then_restore_round_trips() {
        let keys = NamespaceKeys::new(&[9; 32]).unwrap();
        let params = ChunkerParams::new(4096, 16384, 65536).unwrap();
        for len in [0usize, 1, 5000, 300_000] {
            let input = data(len);
            let mut pipeline = StorePipeline::new(keys.clone(), params, true);
            let chunks = store(&mut pipeline, &input, 10_000);
            assert_eq!(pipeline.size(), len as u64);
            let blake3 = pipeline.blake3().unwrap();
            assert_eq!(&blake3, blake3::hash(&input).as_bytes());

            let mut restore = RestorePipeline::new(false);
            let mut output = Vec::new();
            for (meta, sealed) in &chunks {
                let mut out = vec![0u8; meta.span.len];
                restore
                    .open_chunk(&meta.address, &meta.key, sealed, &mut out)
                    .unwrap();
                output.extend_from_slice(&out);
            }
            restore.finish(len as u64, &blake3).unwrap();
            assert_eq!(output, input);
        }
    }

    #[test]
    fn a_flipped_bit_is_caught_before_opening() {
        let keys = NamespaceKeys::new(&[9; 32]).unwrap();
        let mut pipeline = StorePipeline::new(keys, ChunkerParams::default(), false);
        let chunks = store(&mut pipeline, &data(1000), 1000);
        let (meta, sealed) = &chunks[0];
        let mut bad = sealed.clone();
        bad[100] ^= 0x10;
        let mut out = vec![0u8; meta.span.len];
        let err = RestorePipeline::new(true)
            .open_chunk(&meta.address, &meta.key, &bad, &mut out)
            .unwrap_err();
        assert!(matches!(err, Error::AddressMismatch { .. }));
    }
}
