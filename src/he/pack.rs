//! Bit packing of k-bit values, 64 at a time: a block of 64 values of width k is exactly k
//! little-endian u64 words, value i at bits i·k .. (i+1)·k of the block, least significant
//! first. Each width is its own monomorphized function, so the shifts are constants: a value
//! of up to 56 bits unpacks with one unaligned 8-byte load and two shifts (the server's fold
//! of 1000 uploads is mostly this), wider ones block by block in straight-line code.
//!
//! Values are torus words: a k-bit value v is the u64 v·2^(64−k) (its top k bits), so packed
//! sums add exactly as the words do.

/// `dispatch!(width, f, args...)` calls `f::<width>(args...)` for a width in 1..=64.
macro_rules! dispatch {
    ($width:expr, $f:ident, $($arg:expr),*) => {
        dispatch!(@arms $width, $f, ($($arg),*);
            1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31
            32 33 34 35 36 37 38 39 40 41 42 43 44 45 46 47 48 49 50 51 52 53 54 55 56 57 58 59
            60 61 62 63 64)
    };
    (@arms $width:expr, $f:ident, $args:tt; $($w:literal)*) => {
        match $width {
            $($w => dispatch!(@call $f, $w, $args),)*
            other => unreachable!("bit width {other} outside 1..=64 (validated by the caller)"),
        }
    };
    (@call $f:ident, $w:literal, ($($arg:expr),*)) => { $f::<$w>($($arg),*) };
}

/// A little-endian u64 from exactly eight bytes (a chunk of a message body).
pub(crate) fn le_word(chunk: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(chunk);
    u64::from_le_bytes(word)
}

/// `word` rounded to the nearest multiple of 2^(64 - bits) (ties up, wrapping).
pub(crate) fn round_to(word: u64, bits: u32) -> u64 {
    if bits >= 64 {
        return word;
    }
    let step = 1u64 << (64 - bits);
    word.wrapping_add(step >> 1) & !(step - 1)
}

/// 1.5·2^52: adding it to an f64 of magnitude below 2^51 rounds it to an integer (ties to even)
/// held in the low mantissa bits, and adding its bit pattern to an i64 of magnitude below 2^51
/// gives that integer as an f64. Both conversions vectorize, unlike `as` between i64 and f64.
const MAGIC: f64 = 6_755_399_441_055_744.0;

/// `x` (|x| < 2^51) rounded to the nearest integer (ties to even), and its distance to it.
#[inline(always)]
pub(crate) fn round_small(x: f64) -> (i64, f64) {
    let shifted = x + MAGIC;
    let integer = (shifted.to_bits() as i64).wrapping_sub(MAGIC.to_bits() as i64);
    (integer, (x - (shifted - MAGIC)).abs())
}

/// `x` (|x| < 2^51) as an f64, exactly.
#[inline(always)]
pub(crate) fn small_to_f64(x: i64) -> f64 {
    f64::from_bits(x.wrapping_add(MAGIC.to_bits() as i64) as u64) - MAGIC
}

/// Values per block.
pub(crate) const BLOCK: usize = 64;

/// Bytes of `count` values of `width` bits: whole blocks, zero-padded.
pub(crate) fn packed_len(count: usize, width: u32) -> usize {
    count.div_ceil(BLOCK) * width as usize * size_of::<u64>()
}

/// Appends the top `width` bits of each word (zero-padded to a whole block), in parallel.
pub(crate) fn pack_into(words: &[u64], width: u32, out: &mut Vec<u8>) {
    use rayon::prelude::*;
    let start = out.len();
    out.resize(start + packed_len(words.len(), width), 0);
    let block_bytes = width as usize * size_of::<u64>();
    out[start..]
        .par_chunks_mut(block_bytes * TASK)
        .zip(words.par_chunks(BLOCK * TASK))
        .for_each(|(out, words)| dispatch!(width, pack_run, words, out));
}

/// Blocks per parallel task (16,384 values: a 101,770-value fold is 7 tasks, few enough that
/// the scheduling costs less than the unpacking; measured on the 1000-party round).
const TASK: usize = 256;

/// Packs `words` (their top W bits) into `out`, block by block; the last block zero-padded.
#[inline(always)]
fn pack_run<const W: usize>(words: &[u64], out: &mut [u8]) {
    let mut padded = [0u64; BLOCK];
    for (chunk, out) in words
        .chunks(BLOCK)
        .zip(out.chunks_exact_mut(W * size_of::<u64>()))
    {
        let block: &[u64; BLOCK] = match chunk.try_into() {
            Ok(block) => block,
            Err(_) => {
                padded.fill(0);
                padded[..chunk.len()].copy_from_slice(chunk);
                &padded
            }
        };
        for (group, out) in block.chunks_exact(8).zip(out.chunks_exact_mut(W)) {
            pack_group::<W>(group, out);
        }
    }
}

/// Packs the top W bits of 8 torus words into W bytes (8·W bits: the stream's bytes are
/// whole again after every 8 values). The 8 steps unroll, so every shift and store offset
/// is a constant.
#[inline(always)]
fn pack_group<const W: usize>(words: &[u64], out: &mut [u8]) {
    let words: &[u64; 8] = match words.try_into() {
        Ok(words) => words,
        Err(_) => unreachable!("8 words"),
    };
    let mut bytes = [0u8; 72];
    let (mut acc, mut filled, mut at) = (0u128, 0usize, 0usize);
    for &w in words {
        acc |= u128::from(w >> (64 - W)) << filled;
        filled += W;
        if filled >= 64 {
            bytes[at..at + 8].copy_from_slice(&(acc as u64).to_le_bytes());
            acc >>= 64;
            filled -= 64;
            at += 8;
        }
    }
    bytes[at..at + 8].copy_from_slice(&(acc as u64).to_le_bytes());
    out.copy_from_slice(&bytes[..W]);
}

/// Calls `f(value, index)` for each of the `count` packed values of `bytes` (exactly
/// [`packed_len`] bytes), values as torus words. Returns whether every padding value after
/// `count` is zero (a canonical message).
fn unpack_each(bytes: &[u8], width: u32, count: usize, mut f: impl FnMut(usize, u64)) -> bool {
    let shift = 64 - width;
    let block_bytes = width as usize * size_of::<u64>();
    let mut words = [0u64; 64];
    let mut block = [0u64; BLOCK];
    let mut canonical = true;
    for (index, chunk) in bytes.chunks_exact(block_bytes).enumerate() {
        let words = &mut words[..width as usize];
        for (w, b) in words.iter_mut().zip(chunk.chunks_exact(size_of::<u64>())) {
            *w = le_word(b);
        }
        dispatch!(width, unpack_block, words, &mut block);
        let first = index * BLOCK;
        for (i, &v) in block.iter().enumerate() {
            if first + i < count {
                f(first + i, v << shift);
            } else {
                canonical &= v == 0;
            }
        }
    }
    canonical
}

/// Whether the values after `count` in the last block of `bytes` (exactly [`packed_len`]
/// bytes) are zero: a canonical message (only that block is read).
pub(crate) fn padding_is_zero(bytes: &[u8], width: u32, count: usize) -> bool {
    if count.is_multiple_of(BLOCK) {
        return true;
    }
    let block_bytes = width as usize * size_of::<u64>();
    let last = &bytes[bytes.len() - block_bytes..];
    unpack_each(last, width, count % BLOCK, |_, _| {})
}

/// Writes the `count` packed values of `bytes` into `out` as torus words, in parallel.
pub(crate) fn unpack_to(bytes: &[u8], width: u32, count: usize, out: &mut [u64]) {
    unpack_with(bytes, width, count, out, |o, v| *o = v);
}

/// Adds the `count` packed values of `bytes` into `acc` (torus words, wrapping), in
/// parallel. The padding is not read (the parser checks it).
pub(crate) fn unpack_add(bytes: &[u8], width: u32, count: usize, acc: &mut [u64]) {
    unpack_with(bytes, width, count, acc, |a, v| *a = a.wrapping_add(v));
}

fn unpack_with(
    bytes: &[u8],
    width: u32,
    count: usize,
    out: &mut [u64],
    op: impl Fn(&mut u64, u64) + Copy + Send + Sync,
) {
    use rayon::prelude::*;
    let block_bytes = width as usize * size_of::<u64>();
    out[..count]
        .par_chunks_mut(BLOCK * TASK)
        .zip(bytes.par_chunks(block_bytes * TASK))
        .for_each(|(out, bytes)| dispatch!(width, unpack_run, bytes, out, op));
}

/// Unpacks the values of `bytes` (W bits each, whole blocks) into `out` (as many as it
/// holds) through `op`, as torus words. For W <= 56 each value is one unaligned 8-byte load
/// and two shifts (its bits start within the load's first byte); wider values, and the last
/// few whose load would pass the end, go block by block.
#[inline(always)]
fn unpack_run<const W: usize>(bytes: &[u8], out: &mut [u64], op: impl Fn(&mut u64, u64)) {
    let mut done = 0;
    if W <= 56 && bytes.len() >= 8 {
        // Value i reads bytes i·W/8 .. i·W/8 + 8: within `bytes` while i·W/8 <= len - 8.
        let loadable = ((bytes.len() - 8) * 8 / W + 1).min(out.len());
        // Whole blocks only, so the rest starts on a block boundary.
        done = loadable / BLOCK * BLOCK;
        // Eight values span exactly W bytes: read each group's window once, then eight
        // loads at constant offsets within it.
        for (group, out) in out[..done].chunks_exact_mut(8).enumerate() {
            let base = group * W;
            let window = &bytes[base..(base + W + 8).min(bytes.len())];
            for (j, o) in out.iter_mut().enumerate() {
                let bit = j * W;
                let at = bit / 8;
                let mut le = [0u8; 8];
                le.copy_from_slice(&window[at..at + 8]);
                op(o, (u64::from_le_bytes(le) >> (bit % 8)) << (64 - W));
            }
        }
    }
    let mut words = [0u64; W];
    let mut block = [0u64; BLOCK];
    let first = done / BLOCK * W * size_of::<u64>();
    for (chunk, out) in bytes[first..]
        .chunks_exact(W * size_of::<u64>())
        .zip(out[done..].chunks_mut(BLOCK))
    {
        for (w, b) in words.iter_mut().zip(chunk.chunks_exact(size_of::<u64>())) {
            *w = le_word(b);
        }
        unpack_block::<W>(&words, &mut block);
        for (o, &v) in out.iter_mut().zip(&block) {
            op(o, v << (64 - W));
        }
    }
}

/// Unpacks W words into 64 values of W bits.
#[inline(always)]
fn unpack_block<const W: usize>(words: &[u64], out: &mut [u64; BLOCK]) {
    let words: &[u64; W] = match words.try_into() {
        Ok(words) => words,
        Err(_) => unreachable!("W words"),
    };
    let mask = if W == 64 { u64::MAX } else { (1u64 << W) - 1 };
    for (i, o) in out.iter_mut().enumerate() {
        let bit = i * W;
        let (word, offset) = (bit / 64, bit % 64);
        let mut v = words[word] >> offset;
        if offset + W > 64 {
            v |= words[word + 1] << (64 - offset);
        }
        *o = v & mask;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_is_to_nearest() {
        assert_eq!(round_to(0x0000_0000_8000_0000, 32), 1 << 32);
        assert_eq!(round_to(0x0000_0000_7fff_ffff, 32), 0);
        assert_eq!(round_to(u64::MAX, 32), 0);
        assert_eq!(round_to(12345, 64), 12345);
    }

    #[test]
    fn round_trip_every_width() {
        for width in 1..=64u32 {
            let count = 200;
            let shift = 64 - width;
            let words: Vec<u64> = (0..count as u64)
                .map(|i| (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> shift) << shift)
                .collect();
            let mut bytes = Vec::new();
            pack_into(&words, width, &mut bytes);
            assert_eq!(bytes.len(), packed_len(count, width));
            let mut back = vec![0u64; count];
            assert!(unpack_each(&bytes, width, count, |i, v| back[i] = v));
            assert_eq!(back, words, "width {width}");
            let mut acc = words.clone();
            unpack_add(&bytes, width, count, &mut acc);
            let doubled: Vec<u64> = words.iter().map(|w| w.wrapping_add(*w)).collect();
            assert_eq!(acc, doubled, "width {width}");
            let mut again = vec![0u64; count];
            unpack_to(&bytes, width, count, &mut again);
            assert_eq!(again, words, "width {width}");
        }
    }

    #[test]
    fn nonzero_padding_is_reported() {
        let mut bytes = Vec::new();
        pack_into(&[1 << 40; 3], 24, &mut bytes);
        let last = bytes.len() - 1;
        bytes[last] = 1;
        assert!(!unpack_each(&bytes, 24, 3, |_, _| {}));
    }
}
