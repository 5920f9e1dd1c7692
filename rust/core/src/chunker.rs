//! Push-style FastCDC (2020) chunking.
//!
//! FastCDC decides a cut from at most `max_size` bytes after the chunk's start,
//! so a chunker that holds back every tail shorter than `max_size` until more
//! data (or the end) arrives cuts exactly where chunking the whole input at
//! once would, however the input is split.

use fastcdc::v2020::{self, Normalization};

use crate::error::{Error, Result};

pub const DEFAULT_MIN_SIZE: usize = 256 * 1024;
pub const DEFAULT_AVG_SIZE: usize = 1024 * 1024;
pub const DEFAULT_MAX_SIZE: usize = 4 * 1024 * 1024;

/// Validated FastCDC sizes and the masks derived from them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkerParams {
    min_size: usize,
    avg_size: usize,
    max_size: usize,
    mask_s: u64,
    mask_l: u64,
}

impl Default for ChunkerParams {
    fn default() -> Self {
        Self::new(DEFAULT_MIN_SIZE, DEFAULT_AVG_SIZE, DEFAULT_MAX_SIZE)
            .expect("default chunker sizes are valid")
    }
}

fn check_size(name: &str, value: usize, lo: usize, hi: usize) -> Result<()> {
    if !value.is_power_of_two() || value < lo || value > hi {
        return Err(Error::invalid(format!(
            "chunker {name} must be a power of two between {lo} and {hi}, not {value}"
        )));
    }
    Ok(())
}

impl ChunkerParams {
    /// Sizes must be powers of two within FastCDC's ranges, with min < avg < max.
    /// (fastcdc only debug-asserts its ranges, so release builds rely on this.)
    pub fn new(min_size: usize, avg_size: usize, max_size: usize) -> Result<Self> {
        check_size("min_size", min_size, v2020::MINIMUM_MIN, v2020::MINIMUM_MAX)?;
        check_size("avg_size", avg_size, v2020::AVERAGE_MIN, v2020::AVERAGE_MAX)?;
        check_size("max_size", max_size, v2020::MAXIMUM_MIN, v2020::MAXIMUM_MAX)?;
        if !(min_size < avg_size && avg_size < max_size) {
            return Err(Error::invalid(format!(
                "chunker sizes must satisfy min_size < avg_size < max_size, \
                 not {min_size}, {avg_size}, {max_size}"
            )));
        }
        let (mask_s, mask_l) = v2020::select_masks(avg_size, Normalization::Level1);
        Ok(Self {
            min_size,
            avg_size,
            max_size,
            mask_s,
            mask_l,
        })
    }

    pub fn min_size(&self) -> usize {
        self.min_size
    }
    pub fn avg_size(&self) -> usize {
        self.avg_size
    }
    pub fn max_size(&self) -> usize {
        self.max_size
    }

    /// Length of the chunk that starts at `data[0]`, given that `data` is either
    /// at least `max_size` long or the end of the stream.
    fn cut(&self, data: &[u8]) -> usize {
        let (_, len) = v2020::cut(
            data,
            self.min_size,
            self.avg_size,
            self.max_size,
            self.mask_s,
            self.mask_l,
            self.mask_s << 1,
            self.mask_l << 1,
        );
        len
    }
}

/// A span of the input that is a complete chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkSpan {
    pub offset: u64,
    pub len: usize,
}

/// Holds the input tail that cannot be cut yet; yields chunks as they complete.
#[derive(Debug)]
pub struct ChunkBuffer {
    params: ChunkerParams,
    buf: Vec<u8>,
    /// Start of the first byte in `buf` not yet handed out as a chunk.
    start: usize,
    /// Stream offset of `buf[start]`.
    offset: u64,
    finished: bool,
}

impl ChunkBuffer {
    pub fn new(params: ChunkerParams) -> Self {
        Self {
            params,
            buf: Vec::new(),
            start: 0,
            offset: 0,
            finished: false,
        }
    }

    pub fn params(&self) -> &ChunkerParams {
        &self.params
    }

    /// Bytes pushed so far.
    pub fn total_in(&self) -> u64 {
        self.offset + (self.buf.len() - self.start) as u64
    }

    /// Append input. Returns an error after [`ChunkBuffer::finish`].
    pub fn push(&mut self, data: &[u8]) -> Result<()> {
        if self.finished {
            return Err(Error::AlreadyFinalized("chunker"));
        }
        // Compact only once the consumed prefix outweighs the live tail, so
        // each byte is moved a bounded number of times however small the pushes.
        if self.start > 0 && self.start >= self.buf.len() - self.start {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
        Ok(())
    }

    /// Mark the end of the stream: the remaining bytes become the last chunks.
    pub fn finish(&mut self) {
        self.finished = true;
    }

    /// The next complete chunk, if one can be cut now. Its bytes stay valid
    /// until the next `push`.
    pub fn next_chunk(&mut self) -> Option<(ChunkSpan, &[u8])> {
        let live = &self.buf[self.start..];
        if live.is_empty() || (!self.finished && live.len() < self.params.max_size) {
            return None;
        }
        let len = self.params.cut(live);
        let span = ChunkSpan {
            offset: self.offset,
            len,
        };
        let begin = self.start;
        self.start += len;
        self.offset += len as u64;
        Some((span, &self.buf[begin..begin + len]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 32);
        let mut counter = 0u64;
        while out.len() < len {
            let mut h = blake3::Hasher::new();
            h.update(&seed.to_le_bytes());
            h.update(&counter.to_le_bytes());
            out.extend_from_slice(h.finalize().as_bytes());
            counter += 1;
        }
        out.truncate(len);
        out
    }

    fn chunk_all(params: ChunkerParams, pieces: &[&[u8]]) -> Vec<ChunkSpan> {
        let mut cb = ChunkBuffer::new(params);
        let mut spans = Vec::new();
        for piece in pieces {
            cb.push(piece).unwrap();
            while let Some((span, _)) = cb.next_chunk() {
                spans.push(span);
            }
        }
        cb.finish();
        while let Some((span, _)) = cb.next_chunk() {
            spans.push(span);
        }
        spans
    }

    #[test]
    fn matches_whole_input_fastcdc_whatever_the_split() {
        let params = ChunkerParams::new(4096, 16384, 65536).unwrap();
        let data = pseudo_random(3 << 20, 7);
        let expected: Vec<ChunkSpan> = v2020::FastCDC::new(&data, 4096, 16384, 65536)
            .map(|c| ChunkSpan {
                offset: c.offset as u64,
                len: c.length,
            })
            .collect();
        assert!(expected.len() > 50);
        assert_eq!(chunk_all(params, &[&data]), expected);
        for piece in [1usize, 999, 4096, 65535, 65536, 100_003] {
            let pieces: Vec<&[u8]> = data.chunks(piece).collect();
            assert_eq!(chunk_all(params, &pieces), expected, "piece size {piece}");
        }
    }

    #[test]
    fn sizes_stay_in_bounds_and_cover_the_input() {
        let data = pseudo_random(20 << 20, 3);
        let params = ChunkerParams::default();
        let spans = chunk_all(params, &[&data[..5_000_000], &data[5_000_000..]]);
        let total: usize = spans.iter().map(|s| s.len).sum();
        assert_eq!(total, data.len());
        for s in &spans[..spans.len() - 1] {
            assert!(s.len >= params.min_size() && s.len <= params.max_size());
        }
    }

    #[test]
    fn empty_input_has_no_chunks() {
        assert!(chunk_all(ChunkerParams::default(), &[b""]).is_empty());
    }

    #[test]
    fn rejects_bad_sizes() {
        for (a, b, c) in [
            (3000, 16384, 65536),
            (4096, 4096, 65536),
            (65536, 16384, 4096),
            (32, 256, 1024),
            (4096, 16384, 1 << 25),
        ] {
            assert!(ChunkerParams::new(a, b, c).is_err(), "{a} {b} {c}");
        }
    }

    #[test]
    fn push_after_finish_fails() {
        let mut cb = ChunkBuffer::new(ChunkerParams::default());
        cb.finish();
        assert!(matches!(cb.push(b"x"), Err(Error::AlreadyFinalized(_))));
    }
}
