//! The store pipeline (plaintext in, sealed chunks out) and its reverse.

use crate::chunker::{Chunk, ChunkSpan, ChunkStream, ChunkerParams, Cuts};
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

/// The chunk id (keyed BLAKE3) of a chunk's plaintext, taken in one update
/// per part; given `file`, the same pass feeds the whole-file hash.
pub fn chunk_id(
    keys: &NamespaceKeys,
    chunk: &Chunk<'_>,
    mut file: Option<&mut blake3::Hasher>,
) -> ChunkId {
    let mut id = blake3::Hasher::new_keyed(keys.chunk_id_key());
    for part in chunk.parts() {
        id.update(part);
        if let Some(file) = file.as_deref_mut() {
            file.update(part);
        }
    }
    *id.finalize().as_bytes()
}

/// The rest of what a chunk needs, while it is in cache: its key (derived
/// from its id, so the id must come first), then the seal into `out`, whose
/// address is hashed window by window as it is written.
pub fn seal_chunk(
    keys: &NamespaceKeys,
    chunk: &Chunk<'_>,
    chunk_id: ChunkId,
    out: &mut [u8],
) -> Result<SealedMeta> {
    let key = keys.chunk_key(&chunk_id);
    let address = seal::seal_hashed(&key, CHUNK_CONTEXT, &chunk.parts(), out)?;
    Ok(SealedMeta {
        span: chunk.span,
        chunk_id,
        key,
        address,
    })
}

/// The chunks one piece of input completes, cut but not sealed yet: from
/// [`StorePipeline::plan`], for [`StorePipeline::seal`].
#[derive(Debug)]
pub struct Plan {
    cuts: Cuts,
    /// The chunk ids, when they were computed while the piece was cut.
    ids: Option<Vec<ChunkId>>,
    /// Where the planned piece is, so `seal` can refuse any other.
    piece: (usize, usize),
}

impl Plan {
    /// The exact sealed length of each planned chunk, in order.
    pub fn sealed_lens(&self) -> Vec<usize> {
        self.cuts
            .lengths()
            .iter()
            .map(|&len| seal::sealed_len(len as u64) as usize)
            .collect()
    }
}

fn piece_id(piece: &[u8]) -> (usize, usize) {
    (piece.as_ptr() as usize, piece.len())
}

/// FastCDC, chunk id, chunk key, seal, address; plus the whole-file BLAKE3.
///
/// Each piece of input goes through two calls: [`StorePipeline::plan`] cuts
/// the chunks the piece completes (a cut is reported as soon as it is
/// certain), then the caller provides one output buffer per chunk and
/// [`StorePipeline::seal`] fills them, and keeps the start of the chunk still
/// being cut for the next piece. The piece itself is never copied, except
/// that start (fewer than `max_size` bytes). With `parallel`, FastCDC (which
/// is sequential) runs on the calling thread while the other cores hash the
/// piece into the whole-file BLAKE3 and compute the id of each chunk as soon
/// as it is cut; `seal` then seals the chunks on all cores. Without it,
/// everything runs on the calling thread, the whole-file hash in the pass
/// that computes each chunk id.
#[derive(Debug)]
pub struct StorePipeline {
    keys: NamespaceKeys,
    chunks: ChunkStream,
    file_hasher: blake3::Hasher,
    size: u64,
    /// Between `plan` and `seal`.
    planned: bool,
    finished: bool,
    parallel: bool,
}

impl StorePipeline {
    pub fn new(keys: NamespaceKeys, params: ChunkerParams, parallel: bool) -> Self {
        Self {
            keys,
            chunks: ChunkStream::new(params),
            file_hasher: blake3::Hasher::new(),
            size: 0,
            planned: false,
            finished: false,
            parallel,
        }
    }

    /// Take `piece` (the last one if `last`) and cut the chunks it completes.
    /// A plan must be sealed before the next `plan`; an abandoned plan leaves
    /// the pipeline refusing further use.
    pub fn plan(&mut self, piece: &[u8], last: bool) -> Result<Plan> {
        if self.finished || self.planned {
            return Err(Error::AlreadyFinalized("store pipeline"));
        }
        let (cuts, ids) = if self.parallel {
            let (cuts, ids) = self.cut_beside_hashing(piece, last)?;
            (cuts, Some(ids))
        } else {
            (self.chunks.cut(piece, last)?, None)
        };
        self.planned = true;
        self.finished = last;
        self.size += piece.len() as u64;
        Ok(Plan {
            cuts,
            ids,
            piece: piece_id(piece),
        })
    }

    /// Cut `piece` on this thread while rayon's threads hash it into the
    /// whole-file BLAKE3 and compute each chunk's id as soon as it is cut.
    fn cut_beside_hashing(&mut self, piece: &[u8], last: bool) -> Result<(Cuts, Vec<ChunkId>)> {
        let Self {
            keys,
            chunks,
            file_hasher,
            ..
        } = self;
        let keys = &*keys;
        let (sender, ids) = std::sync::mpsc::channel();
        let cuts = rayon::scope(|scope| {
            scope.spawn(|_| {
                file_hasher.update(piece);
            });
            let mut index = 0;
            chunks.cut_each(piece, last, |chunk| {
                let (sender, i) = (sender.clone(), index);
                index += 1;
                scope.spawn(move |_| {
                    // The receiver outlives the scope, so sending cannot fail.
                    let _ = sender.send((i, chunk_id(keys, &chunk, None)));
                });
            })
        })?;
        drop(sender);
        let mut ids: Vec<(usize, ChunkId)> = ids.into_iter().collect();
        ids.sort_unstable_by_key(|&(i, _)| i);
        debug_assert_eq!(ids.len(), cuts.lengths().len());
        Ok((cuts, ids.into_iter().map(|(_, id)| id).collect()))
    }

    /// Seal the chunks of `plan` into `outs` (one buffer per chunk, of the
    /// lengths `Plan::sealed_lens` gave) and keep the rest of `piece`, which
    /// must be the piece that was planned. Returns the chunks' metadata.
    pub fn seal(
        &mut self,
        piece: &[u8],
        plan: Plan,
        outs: &mut [&mut [u8]],
    ) -> Result<Vec<SealedMeta>> {
        let lens = plan.sealed_lens();
        if !self.planned || plan.piece != piece_id(piece) {
            return Err(Error::invalid("seal needs the piece that was just planned"));
        }
        if outs.len() != lens.len() || outs.iter().zip(&lens).any(|(o, &n)| o.len() != n) {
            return Err(Error::invalid(
                "seal needs one buffer per planned chunk, of its sealed length",
            ));
        }
        let Self {
            keys,
            chunks,
            file_hasher,
            ..
        } = self;
        let cut = chunks.chunks(piece, &plan.cuts);
        // Ids come with the plan when it was cut beside hashing (`parallel`).
        let sealed: Result<Vec<SealedMeta>> = match &plan.ids {
            Some(ids) => {
                use rayon::prelude::*;
                cut.par_iter()
                    .zip(ids)
                    .zip(outs.par_iter_mut())
                    .map(|((chunk, &id), out)| seal_chunk(keys, chunk, id, out))
                    .collect()
            }
            None => cut
                .iter()
                .zip(outs.iter_mut())
                .map(|(chunk, out)| {
                    let id = chunk_id(keys, chunk, Some(&mut *file_hasher));
                    seal_chunk(keys, chunk, id, out)
                })
                .collect(),
        };
        self.chunks.commit(piece, plan.cuts);
        self.planned = false;
        sealed
    }

    /// Plaintext bytes taken so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// The whole-file BLAKE3, once the last piece has been sealed.
    pub fn blake3(&self) -> Option<[u8; 32]> {
        (self.finished && !self.planned).then(|| *self.file_hasher.finalize().as_bytes())
    }

    /// Plan and seal `data` (plus the end, if `last`) into fresh vectors: for
    /// Rust callers and tests that do not own output memory.
    pub fn run(&mut self, data: &[u8], last: bool) -> Result<Vec<(SealedMeta, Vec<u8>)>> {
        let plan = self.plan(data, last)?;
        let mut bufs: Vec<Vec<u8>> = plan.sealed_lens().into_iter().map(|n| vec![0; n]).collect();
        let mut views: Vec<&mut [u8]> = bufs.iter_mut().map(|b| b.as_mut_slice()).collect();
        let metas = self.seal(data, plan, &mut views)?;
        Ok(metas.into_iter().zip(bufs).collect())
    }
}

/// Check that `sealed` is exactly as long as a chunk of `plain_len` bytes
/// seals to, without allocating anything. Otherwise the blob is hashed: one
/// that does not match `address` is an address mismatch, whatever its length
/// (so the caller tries another copy); one that does is truncated or extended.
pub fn verify_length(address: &[u8], sealed: &[u8], plain_len: u64) -> Result<()> {
    let expected = seal::sealed_len(plain_len);
    let actual = sealed.len() as u64;
    if actual == expected {
        return Ok(());
    }
    check_address(address, &address_of(sealed, false))?;
    Err(if actual < expected {
        Error::Truncated("the blob is shorter than its plaintext length requires")
    } else {
        Error::TrailingData {
            extra: (actual - expected) as usize,
        }
    })
}

fn check_address(expected: &[u8], actual: &Address) -> Result<()> {
    if actual.as_slice() != expected {
        return Err(Error::AddressMismatch {
            expected: to_hex(expected),
            actual: to_hex(actual),
        });
    }
    Ok(())
}

/// Verify a blob against its address and open it into `out` (exactly the
/// chunk's plaintext length), in one pass: each window of the blob is hashed,
/// then the records it completes are opened. The address comes first: a blob
/// that does not match it is an [`Error::AddressMismatch`] whatever else is
/// wrong with it, so the caller can try another copy; a blob that matches but
/// does not open gives the errors of [`seal::open`] (or of [`verify_length`]).
pub fn open_blob(address: &[u8], key: &[u8], sealed: &[u8], out: &mut [u8]) -> Result<()> {
    verify_length(address, sealed, out.len() as u64)?;
    let (actual, opened) = seal::open_hashed(key, CHUNK_CONTEXT, sealed, out);
    check_address(address, &actual)?;
    let plain_len = opened?;
    debug_assert_eq!(plain_len, out.len());
    Ok(())
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

    pub fn check_active(&self) -> Result<()> {
        if self.finished {
            return Err(Error::AlreadyFinalized("restore pipeline"));
        }
        Ok(())
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// [`open_blob`] into `out` (exactly the chunk's plaintext length), then
    /// add the plaintext to the file.
    pub fn open_chunk(
        &mut self,
        address: &[u8],
        key: &[u8],
        sealed: &[u8],
        out: &mut [u8],
    ) -> Result<()> {
        self.check_active()?;
        open_blob(address, key, sealed, out)?;
        self.add_opened(out)
    }

    /// Add the next chunk's plaintext, which [`open_blob`] verified and opened.
    pub fn add_opened(&mut self, plain: &[u8]) -> Result<()> {
        self.check_active()?;
        hash::update(&mut self.file_hasher, plain, self.parallel);
        self.size += plain.len() as u64;
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
    fn a_copy_that_does_not_match_is_an_address_mismatch_whatever_its_length() {
        let keys = NamespaceKeys::new(&[9; 32]).unwrap();
        let mut pipeline = StorePipeline::new(keys, ChunkerParams::default(), false);
        let chunks = store(&mut pipeline, &data(50_000), 50_000);
        let (meta, sealed) = &chunks[0];
        let mut out = vec![0u8; meta.span.len];
        open_blob(&meta.address, &meta.key, sealed, &mut out).unwrap();
        for bad in [&sealed[..sealed.len() - 1], &sealed[..100], &[][..]] {
            let err = open_blob(&meta.address, &meta.key, bad, &mut out).unwrap_err();
            assert!(matches!(err, Error::AddressMismatch { .. }), "{err}");
        }
        let longer = [sealed.as_slice(), b"x"].concat();
        let err = open_blob(&meta.address, &meta.key, &longer, &mut out).unwrap_err();
        assert!(matches!(err, Error::AddressMismatch { .. }), "{err}");
        // A copy that matches its address but not the plaintext length.
        let err = open_blob(&meta.address, &meta.key, sealed, &mut out[1..]).unwrap_err();
        assert!(matches!(err, Error::TrailingData { extra: 1 }), "{err}");
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
