//! The scan at the heart of FastCDC 2020: where in a range of bytes the gear
//! hash first has every bit of a mask clear.
//!
//! FastCDC 2020 rolls `h = (h << 1) + GEAR[byte]` over the bytes of a chunk,
//! starting from 0 at its minimum size, and tests `h & mask == 0` after each
//! byte (the `fastcdc` crate takes two bytes per step, testing the first with
//! a pre-shifted table and mask; that is the same test, because no mask has
//! bit 63 set). Here `H(n)` is the hash after byte `n`.
//!
//! Each shift pushes the oldest byte further out, so after 64 bytes the hash
//! depends on those 64 bytes only. That makes the scan divisible: the AVX-512
//! kernel scans eight blocks side by side in the eight lanes of a vector,
//! each lane primed with the 64 bytes before its block, and looks the table
//! up with gathers. Which kernel runs is measured once per process (see
//! [`first_hit`]); both give exactly the positions of the `fastcdc` crate.

use std::sync::LazyLock;

use fastcdc::v2020;

/// Bytes after which the hash no longer depends on anything before them.
const WINDOW: usize = 64;

/// FastCDC's gear table and the same table shifted left by one, seed 0.
struct Gear {
    plain: [u64; 256],
    shifted: [u64; 256],
}

static GEAR: LazyLock<Gear> = LazyLock::new(|| {
    let (plain, shifted) = v2020::get_gear_with_seed(0);
    let table = |t: &[u64]| -> [u64; 256] { t.try_into().expect("256 gear entries") };
    Gear {
        plain: table(&plain),
        shifted: table(&shifted),
    }
});

/// A scan kernel: see [`first_hit`].
type Kernel = fn(&[u8], usize, usize, &mut u64, u64) -> Option<usize>;

/// The first position `n` in `from..to` of `data` where `H(n) & mask == 0`,
/// given `hash == H(from - 1)` (0 where the chunk's scan starts). When there
/// is none, `hash` becomes `H(to - 1)`, so a later call can go on from `to`.
/// `mask` must not have bit 63 set (no FastCDC mask has).
pub fn first_hit(data: &[u8], from: usize, to: usize, hash: &mut u64, mask: u64) -> Option<usize> {
    static KERNEL: LazyLock<Kernel> = LazyLock::new(fastest_kernel);
    debug_assert!(mask >> 63 == 0, "FastCDC masks leave bit 63 clear");
    KERNEL(data, from, to, hash, mask)
}

/// The scalar kernel: two bytes per step, for every CPU.
///
/// Per byte pair the hash becomes `(h << 2) + shifted[a] + plain[b]`. Left
/// alone, LLVM computes that as two dependent additions after the shift, and
/// derives the first byte's test value from the same shifted `h`: three
/// instructions on the loop's dependency chain. Hiding the sum of the two
/// table entries and the copy of `h` used for the test behind empty `asm!`
/// blocks, which LLVM cannot see through, leaves a single `lea` on the chain.
pub fn first_hit_scalar(
    data: &[u8],
    from: usize,
    to: usize,
    hash: &mut u64,
    mask: u64,
) -> Option<usize> {
    let gear = &*GEAR;
    let mask_ls = mask << 1;
    let mut h = *hash;
    // One byte pair: Some(0 or 1) if the hash after its first or second byte hits.
    let mut pair = |a: u8, b: u8| -> Option<usize> {
        let first = gear.shifted[a as usize];
        let both = opaque(first.wrapping_add(gear.plain[b as usize]));
        let first_test = (opaque(h) << 2).wrapping_add(first);
        h = (h << 2).wrapping_add(both);
        if first_test & mask_ls == 0 {
            Some(0)
        } else if h & mask == 0 {
            Some(1)
        } else {
            None
        }
    };
    let bytes = &data[from..to];
    let mut blocks = bytes.chunks_exact(8);
    let mut pos = from;
    for block in &mut blocks {
        for i in (0..8).step_by(2) {
            if let Some(k) = pair(block[i], block[i + 1]) {
                return Some(pos + i + k);
            }
        }
        pos += 8;
    }
    let rest = blocks.remainder();
    let mut pairs = rest.chunks_exact(2);
    for two in &mut pairs {
        if let Some(k) = pair(two[0], two[1]) {
            return Some(pos + k);
        }
        pos += 2;
    }
    if let [last] = pairs.remainder() {
        h = (h << 1).wrapping_add(gear.plain[*last as usize]);
        if h & mask == 0 {
            return Some(pos);
        }
    }
    *hash = h;
    None
}

/// `x`, unchanged, but opaque to the optimizer (see [`first_hit_scalar`]).
#[inline(always)]
fn opaque(mut x: u64) -> u64 {
    // SAFETY: an empty template; it only hides the value from LLVM.
    unsafe { std::arch::asm!("/* {0} */", inout(reg) x, options(pure, nomem, nostack)) };
    x
}

/// The AVX-512 kernel, or None if this CPU has no AVX-512F.
#[cfg(target_arch = "x86_64")]
pub fn avx512_kernel() -> Option<Kernel> {
    if !std::arch::is_x86_feature_detected!("avx512f") {
        return None;
    }
    Some(|data, from, to, hash, mask| {
        // SAFETY: AVX-512F is present (checked above).
        unsafe { avx512::first_hit(data, from, to, hash, mask) }
    })
}

#[cfg(not(target_arch = "x86_64"))]
pub fn avx512_kernel() -> Option<Kernel> {
    None
}

/// The AVX-512 kernel where it is faster than the scalar one on this CPU.
///
/// Gathers are fast on some AVX-512 CPUs and slow on others, so instead of
/// guessing from the CPU model, both kernels scan the same 1 MiB of
/// pseudo-random bytes three times each, once per process (about 2 ms), and
/// the faster one is kept. Both find exactly the same positions.
fn fastest_kernel() -> Kernel {
    let Some(avx512) = avx512_kernel() else {
        return first_hit_scalar;
    };
    let mut sample = vec![0u8; 1 << 20];
    blake3::Hasher::new_derive_key("fstore 2026-11-30 gear kernel calibration")
        .finalize_xof()
        .fill(&mut sample);
    // No hit before the end: every kernel scans the whole sample.
    let mask = u64::MAX >> 1;
    let time = |kernel: Kernel| {
        let start = std::time::Instant::now();
        let mut hash = 0;
        std::hint::black_box(kernel(&sample, 0, sample.len(), &mut hash, mask));
        start.elapsed()
    };
    let mut best = [std::time::Duration::MAX; 2];
    for _ in 0..3 {
        best[0] = best[0].min(time(first_hit_scalar));
        best[1] = best[1].min(time(avx512));
    }
    if best[1] < best[0] {
        avx512
    } else {
        first_hit_scalar
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{GEAR, WINDOW, first_hit_scalar};

    const LANES: usize = 8;
    /// Bytes each lane tests per round; 2 KiB measured as fast as larger blocks,
    /// and a hit costs at most one round scanned again by the scalar kernel.
    const BLOCK: usize = 2048;
    const ROUND: usize = LANES * BLOCK;

    /// See [`super::first_hit`]. Lanes start 64 bytes into the range, so that
    /// each lane's priming bytes lie inside it (whatever came before `from`
    /// reaches the lanes only through `hash`, which is gone after 64 bytes).
    ///
    /// # Safety
    /// The CPU must support AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn first_hit(
        data: &[u8],
        from: usize,
        to: usize,
        hash: &mut u64,
        mask: u64,
    ) -> Option<usize> {
        let lanes_from = from + WINDOW;
        if to < lanes_from + ROUND {
            return first_hit_scalar(data, from, to, hash, mask);
        }
        if let Some(n) = first_hit_scalar(data, from, lanes_from, hash, mask) {
            return Some(n);
        }
        let mut pos = lanes_from;
        while pos + ROUND <= to {
            // SAFETY: the round reads data[pos - WINDOW .. pos + ROUND], inside data[from..to].
            let (hit, last) = unsafe { round(data, pos, mask) };
            if hit {
                // Which byte: the scalar kernel goes through this round in order.
                let found = first_hit_scalar(data, pos, pos + ROUND, hash, mask);
                debug_assert!(
                    found.is_some(),
                    "the lanes saw a hit the scalar kernel did not"
                );
                if found.is_some() {
                    return found;
                }
            }
            *hash = last;
            pos += ROUND;
        }
        first_hit_scalar(data, pos, to, hash, mask)
    }

    /// Scans `data[pos .. pos + ROUND]` as eight blocks, one per lane, each
    /// primed with its 64 bytes before. Returns whether any position hit, and
    /// the hash after the round's last byte (exact: the last lane is primed).
    ///
    /// # Safety
    /// AVX-512F, and `WINDOW <= pos`, `pos + ROUND <= data.len()`.
    #[target_feature(enable = "avx512f")]
    unsafe fn round(data: &[u8], pos: usize, mask: u64) -> (bool, u64) {
        debug_assert!(WINDOW <= pos && pos + ROUND <= data.len());
        let gear = GEAR.plain.as_ptr().cast::<i64>();
        // SAFETY: in bounds by the caller's contract; every read below is
        // within `data[pos - WINDOW .. pos + ROUND]` (lane `j` reads 8 bytes
        // at `j * BLOCK + step`, `step < WINDOW + BLOCK`).
        let base = unsafe { data.as_ptr().add(pos - WINDOW) }.cast::<i64>();
        let block = BLOCK as i64;
        let lane_starts = _mm512_setr_epi64(
            0,
            block,
            2 * block,
            3 * block,
            4 * block,
            5 * block,
            6 * block,
            7 * block,
        );
        let low_byte = _mm512_set1_epi64(0xff);
        let masks = _mm512_set1_epi64(mask as i64);
        let mut h = _mm512_setzero_si512();
        let mut hits: __mmask8 = 0;
        let mut step = 0;
        while step < WINDOW + BLOCK {
            let offsets = _mm512_add_epi64(lane_starts, _mm512_set1_epi64(step as i64));
            // SAFETY: see above; unaligned 8-byte reads.
            let mut bytes = unsafe { _mm512_i64gather_epi64::<1>(offsets, base) };
            for _ in 0..8 {
                let index = _mm512_and_si512(bytes, low_byte);
                bytes = _mm512_srli_epi64::<8>(bytes);
                // SAFETY: every index is below 256, the table's length.
                let entry = unsafe { _mm512_i64gather_epi64::<8>(index, gear) };
                h = _mm512_add_epi64(_mm512_add_epi64(h, h), entry);
                if step >= WINDOW {
                    hits |= _mm512_testn_epi64_mask(h, masks);
                }
            }
            step += 8;
        }
        let last = _mm256_extract_epi64::<3>(_mm512_extracti64x4_epi64::<1>(h)) as u64;
        (hits != 0, last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
        let mut out = vec![0u8; len];
        blake3::Hasher::new_keyed(&[seed as u8; 32])
            .finalize_xof()
            .fill(&mut out);
        out
    }

    /// The definition, one byte at a time.
    fn reference(data: &[u8], from: usize, to: usize, hash: &mut u64, mask: u64) -> Option<usize> {
        for (n, &b) in data.iter().enumerate().take(to).skip(from) {
            *hash = (*hash << 1).wrapping_add(GEAR.plain[b as usize]);
            if *hash & mask == 0 {
                return Some(n);
            }
        }
        None
    }

    fn kernels() -> Vec<(&'static str, Kernel)> {
        let mut kernels: Vec<(&'static str, Kernel)> = vec![("scalar", first_hit_scalar)];
        if let Some(avx512) = avx512_kernel() {
            kernels.push(("avx512", avx512));
        }
        kernels
    }

    #[test]
    fn kernels_agree_with_the_definition() {
        let random = pseudo_random(300_000, 1);
        let mut low_entropy = vec![0u8; 300_000];
        for (i, b) in low_entropy.iter_mut().enumerate() {
            *b = (i / 5000 % 4) as u8;
        }
        // Masks of 4 to 21 bits (from v2020's table), hits from every few
        // bytes to none at all; odd and even bounds; a carried-in hash.
        let masks = [0x0000_0000_0000_0003, 0x0000_0000_0180_4110]
            .into_iter()
            .chain(v2020::MASKS[6..25].iter().copied());
        for mask in masks {
            for data in [&random, &low_entropy] {
                for (from, to) in [
                    (0, data.len()),
                    (1, 99_999),
                    (64, 64 + 16_384 * 3 + 64),
                    (1000, 1001),
                    (7, 7),
                ] {
                    for start_hash in [0, 0x1234_5678_9abc_def0] {
                        let mut expected_hash = start_hash;
                        let expected = reference(data, from, to, &mut expected_hash, mask);
                        for (name, kernel) in kernels() {
                            let mut hash = start_hash;
                            let found = kernel(data, from, to, &mut hash, mask);
                            assert_eq!(found, expected, "{name} {mask:#x} {from}..{to}");
                            if found.is_none() {
                                assert_eq!(hash, expected_hash, "{name} {mask:#x} {from}..{to}");
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn a_scan_can_be_split_anywhere() {
        let data = pseudo_random(200_000, 2);
        let mask = v2020::MASKS[18];
        let mut whole_hash = 0;
        let whole = first_hit(&data, 0, data.len(), &mut whole_hash, mask);
        for split in [1, 63, 64, 65, 20_000, 150_001] {
            let mut hash = 0;
            let parts = first_hit(&data, 0, split, &mut hash, mask)
                .or_else(|| first_hit(&data, split, data.len(), &mut hash, mask));
            assert_eq!(parts, whole, "split at {split}");
        }
    }
}
