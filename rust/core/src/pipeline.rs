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

/// What sealing one chunk produced; the sealed bytes are in the caller's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealedMeta {
    pub span: ChunkSpan,
    pub chunk_id: ChunkId,
    pub key: ChunkKey,
    pub address: Address,
}

/// Chunk id, chunk key, seal into `out`, address: everything one chunk needs.
pub fn seal_chunk(
    keys: &NamespaceKeys,
    span: ChunkSpan,
    plain: &[u8],
    out: &mut [u8],
) -> Result<SealedMeta> {
    let chunk_id = keys.chunk_id(plain, false);
    let key = keys.chunk_key(&chunk_id);
    seal::seal_into(&key, CHUNK_CONTEXT, plain, out)?;
    Ok(SealedMeta {
        span,
        chunk_id,
        key,
        address: address_of(out, false),
    })
}

/// FastCDC, chunk id, chunk key, seal, address; plus the whole-file BLAKE3.
///
/// Work proceeds in steps: each [`StorePipeline::step`] seals the chunks the
/// previous step cut, while it cuts the next ones and hashes the new input.
/// With `parallel`, those three jobs (and the chunks among themselves) run on
/// all cores, so FastCDC, which is inherently sequential, overlaps with the
/// rest instead of adding to it.
#[derive(Debug)]
pub struct StorePipeline {
    keys: NamespaceKeys,
    chunks: ChunkBuffer,
    /// Cut in the last step, sealed in the next.
    pending: Vec<ChunkSpan>,
    file_hasher: blake3::Hasher,
    hashed: u64,
    finished: bool,
    parallel: bool,
}

impl StorePipeline {
    pub fn new(keys: NamespaceKeys, params: ChunkerParams, parallel: bool) -> Self {
        Self {
            keys,
            chunks: ChunkBuffer::new(params),
            pending: Vec::new(),
            file_hasher: blake3::Hasher::new(),
            hashed: 0,
            finished: false,
            parallel,
        }
    }

    pub fn push(&mut self, data: &[u8]) -> Result<()> {
        if self.finished {
            return Err(Error::AlreadyFinalized("store pipeline"));
        }
        self.chunks.push(data)
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

    /// Sealed lengths of the chunks the next `step` seals, in order.
    pub fn pending_sealed_lens(&self) -> Vec<usize> {
        self.pending
            .iter()
            .map(|span| seal::sealed_len(span.len as u64) as usize)
            .collect()
    }

    /// Whether `step` still has anything to do.
    pub fn has_work(&self) -> bool {
        let uncut = self.chunks.total_in() - self.chunks.cut_offset();
        !self.pending.is_empty()
            || self.hashed < self.chunks.total_in()
            || (uncut > 0 && (self.finished || uncut >= self.chunks.params().max_size() as u64))
    }

    /// Seal the pending chunks into `outs` (one buffer per pending chunk, of
    /// the lengths `pending_sealed_lens` gave), cut the next chunks, and hash
    /// the input pushed since the last step. Returns the sealed chunks' metadata.
    pub fn step(&mut self, outs: &mut [&mut [u8]]) -> Result<Vec<SealedMeta>> {
        let lens = self.pending_sealed_lens();
        if outs.len() != lens.len() || outs.iter().zip(&lens).any(|(o, &n)| o.len() != n) {
            return Err(Error::invalid(
                "step needs one buffer per pending chunk, of its sealed length",
            ));
        }
        let Self {
            keys,
            chunks,
            pending,
            file_hasher,
            hashed,
            parallel,
            ..
        } = self;
        let (keys, chunks, pending, parallel) = (&*keys, &*chunks, &*pending, *parallel);
        let total = chunks.total_in();
        let new_input = chunks.range(*hashed, total);
        let mut seal_all = move || -> Result<Vec<SealedMeta>> {
            if parallel {
                use rayon::prelude::*;
                pending
                    .par_iter()
                    .zip(outs.par_iter_mut())
                    .map(|(span, out)| seal_chunk(keys, *span, chunks.bytes(span), out))
                    .collect()
            } else {
                pending
                    .iter()
                    .zip(outs.iter_mut())
                    .map(|(span, out)| seal_chunk(keys, *span, chunks.bytes(span), out))
                    .collect()
            }
        };
        let (lengths, sealed) = if parallel {
            let (lengths, (_, sealed)) = rayon::join(
                || chunks.cut_lengths(),
                || rayon::join(|| file_hasher.update(new_input), seal_all),
            );
            (lengths, sealed)
        } else {
            file_hasher.update(new_input);
            (chunks.cut_lengths(), seal_all())
        };
        let sealed = sealed?;
        self.hashed = total;
        self.pending = self.chunks.advance(&lengths);
        let keep = self
            .pending
            .first()
            .map_or(self.chunks.cut_offset(), |span| span.offset);
        self.chunks.release_before(keep);
        Ok(sealed)
    }

    pub fn size(&self) -> u64 {
        self.chunks.total_in()
    }

    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// The whole-file BLAKE3, once the input has ended and every step ran.
    pub fn blake3(&self) -> Option<[u8; 32]> {
        (self.finished && !self.has_work()).then(|| *self.file_hasher.finalize().as_bytes())
    }

    /// Drive the pipeline over `data` (plus the end, if `last`), sealing into
    /// fresh vectors: for Rust callers and tests that do not own output memory.
    pub fn run(&mut self, data: &[u8], last: bool) -> Result<Vec<(SealedMeta, Vec<u8>)>> {
        self.push(data)?;
        if last {
            self.finish()?;
        }
        let mut out = Vec::new();
        loop {
            let mut bufs: Vec<Vec<u8>> = self
                .pending_sealed_lens()
                .into_iter()
                .map(|n| vec![0; n])
                .collect();
            let mut views: Vec<&mut [u8]> = bufs.iter_mut().map(|b| b.as_mut_slice()).collect();
            let metas = self.step(&mut views)?;
            out.extend(metas.into_iter().zip(bufs));
            if !last || !self.has_work() {
                return Ok(out);
            }
        }
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
    ) -> Vec<(SealedMeta, Vec<u8>)> {
        let mut out = Vec::new();
        let pieces: Vec<&[u8]> = input.chunks(piece.max(1)).collect();
        for part in &pieces {
            out.extend(pipeline.run(part, false).unwrap());
        }
        out.extend(pipeline.run(b"", true).unwrap());
        out
    }

    #[test]
    fn store_then_restore_round_trips() {
        let keys = NamespaceKeys::new(&[9; 32]).unwrap();
        let params = ChunkerParams::new(4096, 16384, 65536).unwrap();
        for parallel in [false, true] {
            for len in [0usize, 1, 5000, 300_000] {
                let input = data(len);
                let mut pipeline = StorePipeline::new(keys.clone(), params, parallel);
                let chunks = store(&mut pipeline, &input, 10_000);
                assert_eq!(pipeline.size(), len as u64);
                let blake3 = pipeline.blake3().unwrap();
                assert_eq!(&blake3, blake3::hash(&input).as_bytes());

                let mut restore = RestorePipeline::new(parallel);
                let mut output = Vec::new();
                for (meta, sealed) in &chunks {
                    assert_eq!(
                        meta.chunk_id,
                        keys.chunk_id(&input[meta.span.offset as usize..][..meta.span.len], false)
                    );
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
    }

    #[test]
    fn cut_points_do_not_depend_on_parallelism_or_piece_size() {
        let keys = NamespaceKeys::new(&[3; 32]).unwrap();
        let params = ChunkerParams::new(4096, 16384, 65536).unwrap();
        let input = data(1_000_000);
        let spans = |parallel, piece| {
            let mut p = StorePipeline::new(keys.clone(), params, parallel);
            store(&mut p, &input, piece)
                .into_iter()
                .map(|(m, _)| (m.span, m.chunk_id))
                .collect::<Vec<_>>()
        };
        let reference = spans(false, 1_000_000);
        assert!(reference.len() > 20);
        assert_eq!(spans(true, 1_000_000), reference);
        assert_eq!(spans(true, 777), reference);
        assert_eq!(spans(false, 100_003), reference);
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

    #[test]
    fn blake3_only_after_finish() {
        let keys = NamespaceKeys::new(&[9; 32]).unwrap();
        let mut pipeline = StorePipeline::new(keys, ChunkerParams::default(), true);
        pipeline.run(b"abc", false).unwrap();
        assert!(pipeline.blake3().is_none());
        pipeline.run(b"", true).unwrap();
        assert_eq!(&pipeline.blake3().unwrap(), blake3::hash(b"abc").as_bytes());
    }
}
