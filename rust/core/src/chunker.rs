//! Push-style FastCDC (2020) chunking.
//!
//! FastCDC decides where a chunk ends from at most `max_size` bytes after its
//! start, and usually from far fewer: the first position whose gear hash hits
//! the mask. [`Cutter`] tests each position once, as the bytes arrive, and
//! reports a cut as soon as no later byte can change it; so however the input
//! is split, the cut points are those of chunking it whole (the `fastcdc`
//! crate's, tested below). [`ChunkStream`] cuts borrowed pieces without
//! copying them, holding back only the start of the chunk still being cut.

use fastcdc::v2020::{self, Normalization};

use crate::error::{Error, Result};
use crate::gear;

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
    /// at least `max_size` long or the end of the stream: `fastcdc::v2020::cut`.
    pub fn cut(&self, data: &[u8]) -> usize {
        Cutter::new(*self)
            .next_cut(data, 0, true)
            .expect("at the end of the stream every chunk is decided")
    }
}

/// FastCDC's progress through the chunk being cut, kept from one input to the next.
#[derive(Debug, Clone)]
pub struct Cutter {
    params: ChunkerParams,
    /// The next position to test, counted from the chunk's start.
    next: usize,
    /// The gear hash after the byte before `next`.
    hash: u64,
    /// A hit at the last byte seen, decided only by what follows (see `next_cut`).
    hit_at_end: Option<usize>,
}

impl Cutter {
    pub fn new(params: ChunkerParams) -> Self {
        Self {
            params,
            next: params.min_size,
            hash: 0,
            hit_at_end: None,
        }
    }

    /// The length of the chunk being cut, if the bytes seen so far decide it.
    ///
    /// `bytes` holds the chunk's bytes from position `bytes_pos` (counted from
    /// the chunk's start) to the last byte that has arrived; earlier calls saw
    /// every position before `bytes_pos`. `end`: nothing follows in the stream.
    /// After a cut the cutter starts on the next chunk, at the cut.
    ///
    /// FastCDC tests positions from `min_size`, with the strict mask before
    /// `avg_size` and the loose one after, and cuts at `max_size` at the
    /// latest. It tests bytes in pairs, so the odd last byte of a stream is
    /// never tested: a hit on the last byte seen is certain only once another
    /// byte arrives, or the stream ends after an even number of bytes.
    pub fn next_cut(&mut self, bytes: &[u8], bytes_pos: usize, end: bool) -> Option<usize> {
        let params = self.params;
        let seen = bytes_pos + bytes.len();
        if let Some(hit) = self.hit_at_end {
            return match (seen > hit + 1, end) {
                (true, _) => Some(self.cut_at(hit)),
                (false, true) => Some(self.cut_at(if seen.is_multiple_of(2) { hit } else { seen })),
                (false, false) => None,
            };
        }
        if end && seen <= params.min_size {
            return Some(self.cut_at(seen));
        }
        let limit = match end {
            true => seen.min(params.max_size) & !1,
            false => seen.min(params.max_size),
        };
        if self.next < limit {
            debug_assert!(
                bytes_pos <= self.next,
                "every position before bytes_pos was seen"
            );
            let split = params.avg_size.clamp(self.next, limit) - bytes_pos;
            let (from, to) = (self.next - bytes_pos, limit - bytes_pos);
            let hit = gear::first_hit(bytes, from, split, &mut self.hash, params.mask_s)
                .or_else(|| gear::first_hit(bytes, split, to, &mut self.hash, params.mask_l))
                .map(|i| i + bytes_pos);
            self.next = limit;
            match hit {
                Some(hit) if end || hit + 1 < seen => return Some(self.cut_at(hit)),
                Some(hit) => {
                    self.hit_at_end = Some(hit);
                    return None;
                }
                None => {}
            }
        }
        if limit == params.max_size {
            return Some(self.cut_at(params.max_size));
        }
        end.then(|| self.cut_at(seen))
    }

    fn cut_at(&mut self, len: usize) -> usize {
        *self = Self::new(self.params);
        len
    }
}

/// A span of the input that is a complete chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkSpan {
    pub offset: u64,
    pub len: usize,
}

/// A cut chunk: its first bytes may be held from earlier pieces (`head`), the
/// rest lies in the current piece (`tail`); either part may be empty.
#[derive(Debug, Clone, Copy)]
pub struct Chunk<'a> {
    pub span: ChunkSpan,
    pub head: &'a [u8],
    pub tail: &'a [u8],
}

impl<'a> Chunk<'a> {
    pub fn parts(&self) -> [&'a [u8]; 2] {
        [self.head, self.tail]
    }
}

/// The chunk lengths one piece decided: from [`ChunkStream::cut`], for
/// [`ChunkStream::chunks`] and then [`ChunkStream::commit`].
#[derive(Debug)]
pub struct Cuts {
    lengths: Vec<usize>,
    piece_len: usize,
    last: bool,
}

impl Cuts {
    pub fn lengths(&self) -> &[usize] {
        &self.lengths
    }
}

/// FastCDC over a stream of borrowed pieces, without copying them: only the
/// start of the chunk still being cut (fewer than `max_size` bytes) is copied,
/// to be joined with the next piece. Each piece goes through `cut`, then
/// `chunks` (which borrows it), then `commit`.
#[derive(Debug)]
pub struct ChunkStream {
    cutter: Cutter,
    /// The bytes of the chunk being cut that arrived before the current piece.
    held: Vec<u8>,
    /// Stream offset of `held[0]`, the start of the chunk being cut.
    offset: u64,
    finished: bool,
}

impl ChunkStream {
    pub fn new(params: ChunkerParams) -> Self {
        Self {
            cutter: Cutter::new(params),
            held: Vec::new(),
            offset: 0,
            finished: false,
        }
    }

    pub fn params(&self) -> &ChunkerParams {
        &self.cutter.params
    }

    /// Decide the chunks that `piece` completes (with `last`, all the rest).
    /// Returns an error after the last piece.
    pub fn cut(&mut self, piece: &[u8], last: bool) -> Result<Cuts> {
        self.cut_each(piece, last, |_| {})
    }

    /// [`ChunkStream::cut`], handing each chunk to `on_chunk` as soon as it is
    /// cut, so that work on it can start while the rest of `piece` is cut.
    pub fn cut_each<'a>(
        &'a mut self,
        piece: &'a [u8],
        last: bool,
        mut on_chunk: impl FnMut(Chunk<'a>),
    ) -> Result<Cuts> {
        if self.finished {
            return Err(Error::AlreadyFinalized("chunker"));
        }
        let Self {
            cutter,
            held,
            offset,
            ..
        } = self;
        let held: &'a [u8] = held;
        let total = held.len() + piece.len();
        let mut lengths = Vec::new();
        let mut start = 0;
        while start < total {
            let (bytes, bytes_pos) = match start.checked_sub(held.len()) {
                Some(in_piece) => (&piece[in_piece..], 0),
                None => (piece, held.len() - start),
            };
            let Some(len) = cutter.next_cut(bytes, bytes_pos, last) else {
                break;
            };
            on_chunk(chunk_at(held, piece, *offset, start, len));
            lengths.push(len);
            start += len;
        }
        Ok(Cuts {
            lengths,
            piece_len: piece.len(),
            last,
        })
    }

    /// The chunks of `cuts`, borrowing the held bytes and `piece`.
    pub fn chunks<'a>(&'a self, piece: &'a [u8], cuts: &Cuts) -> Vec<Chunk<'a>> {
        debug_assert_eq!(piece.len(), cuts.piece_len);
        let mut start = 0;
        cuts.lengths
            .iter()
            .map(|&len| {
                let chunk = chunk_at(&self.held, piece, self.offset, start, len);
                start += len;
                chunk
            })
            .collect()
    }

    /// Drop the bytes of the chunks cut and hold what `piece` adds to the next.
    pub fn commit(&mut self, piece: &[u8], cuts: Cuts) {
        debug_assert_eq!(piece.len(), cuts.piece_len);
        let consumed: usize = cuts.lengths.iter().sum();
        match consumed.checked_sub(self.held.len()) {
            Some(in_piece) => {
                self.held.clear();
                self.held.extend_from_slice(&piece[in_piece..]);
            }
            None => {
                self.held.drain(..consumed);
                self.held.extend_from_slice(piece);
            }
        }
        self.offset += consumed as u64;
        if cuts.last {
            debug_assert!(self.held.is_empty());
            self.finished = true;
            self.held = Vec::new();
        }
    }

    /// Bytes committed so far.
    pub fn total_in(&self) -> u64 {
        self.offset + self.held.len() as u64
    }

    pub fn is_finished(&self) -> bool {
        self.finished
    }
}

/// The chunk of `len` bytes at `start` in `held` followed by `piece`, where
/// `held[0]` is at stream offset `offset`.
fn chunk_at<'a>(
    held: &'a [u8],
    piece: &'a [u8],
    offset: u64,
    start: usize,
    len: usize,
) -> Chunk<'a> {
    let (end, h) = (start + len, held.len());
    Chunk {
        span: ChunkSpan {
            offset: offset + start as u64,
            len,
        },
        head: &held[start.min(h)..end.min(h)],
        tail: &piece[start.max(h) - h..end.max(h) - h],
    }
}

/// The cut points of [`ChunkStream`] for a caller that owns its input: every
/// byte pushed is copied into the buffer, and chunks are taken one at a time.
#[derive(Debug)]
pub struct ChunkBuffer {
    cutter: Cutter,
    /// Stream bytes `[base, base + buf.len())`; the chunk being cut starts at `buf[start]`.
    buf: Vec<u8>,
    base: u64,
    start: usize,
    finished: bool,
}

impl ChunkBuffer {
    pub fn new(params: ChunkerParams) -> Self {
        Self {
            cutter: Cutter::new(params),
            buf: Vec::new(),
            base: 0,
            start: 0,
            finished: false,
        }
    }

    pub fn params(&self) -> &ChunkerParams {
        &self.cutter.params
    }

    /// Bytes pushed so far.
    pub fn total_in(&self) -> u64 {
        self.base + self.buf.len() as u64
    }

    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Append input. Returns an error after [`ChunkBuffer::finish`].
    pub fn push(&mut self, data: &[u8]) -> Result<()> {
        if self.finished {
            return Err(Error::AlreadyFinalized("chunker"));
        }
        // Compact only once the dead prefix outweighs the live bytes, so each
        // byte is moved a bounded number of times however small the pushes.
        if self.start > 0 && self.start >= self.buf.len() - self.start {
            self.buf.drain(..self.start);
            self.base += self.start as u64;
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
        Ok(())
    }

    /// Mark the end of the stream: the remaining bytes become the last chunks.
    pub fn finish(&mut self) {
        self.finished = true;
    }

    /// The next complete chunk, if the bytes pushed so far decide it; its
    /// bytes stay valid until the next `push`.
    pub fn next_chunk(&mut self) -> Option<(ChunkSpan, &[u8])> {
        let live = &self.buf[self.start..];
        if live.is_empty() {
            return None;
        }
        let len = self.cutter.next_cut(live, 0, self.finished)?;
        let span = ChunkSpan {
            offset: self.base + self.start as u64,
            len,
        };
        self.start += len;
        Some((span, &self.buf[self.start - len..self.start]))
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

    /// Chunk `pieces` with [`ChunkStream`], the zero-copy path.
    fn stream_all(params: ChunkerParams, pieces: &[&[u8]]) -> Vec<ChunkSpan> {
        let mut stream = ChunkStream::new(params);
        let mut spans = Vec::new();
        for (i, piece) in pieces.iter().enumerate() {
            let cuts = stream.cut(piece, i + 1 == pieces.len()).unwrap();
            spans.extend(stream.chunks(piece, &cuts).iter().map(|chunk| chunk.span));
            stream.commit(piece, cuts);
        }
        if !stream.is_finished() {
            let cuts = stream.cut(b"", true).unwrap();
            spans.extend(stream.chunks(b"", &cuts).iter().map(|chunk| chunk.span));
            stream.commit(b"", cuts);
        }
        spans
    }

    fn crate_spans(data: &[u8], (min, avg, max): (usize, usize, usize)) -> Vec<ChunkSpan> {
        v2020::FastCDC::new(data, min, avg, max)
            .map(|c| ChunkSpan {
                offset: c.offset as u64,
                len: c.length,
            })
            .collect()
    }

    #[test]
    fn the_stream_matches_whole_input_fastcdc_whatever_the_split() {
        let sizes = (4096, 16384, 65536);
        let params = ChunkerParams::new(sizes.0, sizes.1, sizes.2).unwrap();
        let data = pseudo_random(3 << 20, 5);
        let expected = crate_spans(&data, sizes);
        for piece in [1usize, 999, 4096, 65535, 65536, 100_003, 1 << 20] {
            let pieces: Vec<&[u8]> = data.chunks(piece).collect();
            assert_eq!(stream_all(params, &pieces), expected, "piece size {piece}");
            // The bytes of every chunk, from the held part and the piece, are the input's.
            let mut stream = ChunkStream::new(params);
            let mut rebuilt = Vec::new();
            for piece in &pieces {
                let cuts = stream.cut(piece, false).unwrap();
                for chunk in stream.chunks(piece, &cuts) {
                    rebuilt.extend_from_slice(chunk.head);
                    rebuilt.extend_from_slice(chunk.tail);
                }
                stream.commit(piece, cuts);
            }
            let cuts = stream.cut(b"", true).unwrap();
            for chunk in stream.chunks(b"", &cuts) {
                rebuilt.extend_from_slice(chunk.head);
            }
            assert!(rebuilt == data, "piece size {piece}");
        }
    }

    #[test]
    fn a_stream_that_ends_or_pauses_right_after_a_cutting_byte() {
        // FastCDC cuts before the byte whose hash hits, testing bytes in pairs:
        // if the stream ends just after that byte, the cut holds only when the
        // chunk has an even length.
        let sizes = (4096, 16384, 65536);
        let params = ChunkerParams::new(sizes.0, sizes.1, sizes.2).unwrap();
        let data = pseudo_random(2 << 20, 9);
        let spans = crate_spans(&data, sizes);
        for parity in [0, 1] {
            let span = spans
                .iter()
                .find(|s| s.len < sizes.2 && s.len % 2 == parity)
                .expect("a cut of each parity");
            let end = (span.offset as usize) + span.len + 1;
            let stream = &data[..end];
            assert_eq!(stream_all(params, &[stream]), crate_spans(stream, sizes));
            let (before, after) = data.split_at(end);
            assert_eq!(stream_all(params, &[before, after]), spans);
        }
    }

    #[test]
    fn cut_equals_the_fastcdc_crate() {
        let random = pseudo_random(1 << 20, 11);
        let mut low_entropy = vec![0u8; 1 << 20];
        for (i, b) in low_entropy.iter_mut().enumerate() {
            *b = (i / 4096 % 3) as u8;
        }
        for (min, avg, max) in [
            (64, 256, 1024),
            (4096, 16384, 65536),
            (256 << 10, 1 << 20, 4 << 20),
        ] {
            let params = ChunkerParams::new(min, avg, max).unwrap();
            for data in [&random, &low_entropy] {
                for start in (0..data.len()).step_by(9973) {
                    for end in [
                        data.len(),
                        start + max / 2 + 1,
                        start + min,
                        start + min + 3,
                    ] {
                        let window = &data[start..end.min(data.len())];
                        let (_, expected) = v2020::cut(
                            window,
                            min,
                            avg,
                            max,
                            params.mask_s,
                            params.mask_l,
                            params.mask_s << 1,
                            params.mask_l << 1,
                        );
                        assert_eq!(
                            params.cut(window),
                            expected,
                            "{min}/{avg}/{max} at {start}..{end}"
                        );
                    }
                }
            }
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
