//! The mutation engine: a seeded random number generator and the mutations it draws from, so a
//! campaign is reproducible from its seed (same seed, same seed corpus: the same inputs).
//!
//! The mutations are the usual ones of byte-level fuzzers (AFL's havoc stage, libFuzzer's
//! mutators): bit flips, byte sets, arithmetic, interesting integers, inserting, deleting,
//! duplicating and copying ranges, splicing from another corpus entry, dictionary tokens — and
//! two aimed at the formats Passerelle decodes: LEB128 varints (postcard lengths and tags,
//! Automerge's columns) and 4-byte little-endian length prefixes (bundle and sync frames)
//! changed by small amounts or set to edge values.

/// A xorshift64* generator: small, fast and good enough to pick mutations; not for secrets.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A generator from a seed (any value, 0 included: the seed is mixed with splitmix64).
    pub fn new(seed: u64) -> Self {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Self {
            state: if z == 0 { 1 } else { z },
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        // The modulo bias is irrelevant for choosing mutations.
        (self.next_u64() % n as u64) as usize
    }

    /// True once in `n` draws.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    pub fn byte(&mut self) -> u8 {
        self.next_u64() as u8
    }

    /// A length from 1 to `max`, biased towards short ones (most useful edits are small).
    pub fn small_len(&mut self, max: usize) -> usize {
        let max = max.max(1);
        let cap = match self.below(4) {
            0 | 1 => 4,
            2 => 32,
            _ => max,
        };
        1 + self.below(cap.min(max))
    }
}

/// Integers that often sit on a decoder's edges: zero, one, sign boundaries, all ones.
const INTERESTING: &[u64] = &[
    0,
    1,
    2,
    0x7f,
    0x80,
    0xff,
    0x100,
    0x7fff,
    0x8000,
    0xffff,
    0x1_0000,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    0x1_0000_0000,
    0x7fff_ffff_ffff_ffff,
    0x8000_0000_0000_0000,
    u64::MAX,
    u64::MAX - 1,
];

/// Most mutations stacked on one input.
const STACK_MAX: usize = 8;
/// Largest range moved by one insertion, deletion or copy, in bytes.
const RANGE_MAX_BYTES: usize = 4096;

/// The mutator of one campaign.
#[derive(Debug)]
pub struct Mutator {
    pub rng: Rng,
    max_len: usize,
    dictionary: &'static [&'static [u8]],
}

impl Mutator {
    pub fn new(seed: u64, max_len: usize, dictionary: &'static [&'static [u8]]) -> Self {
        Self {
            rng: Rng::new(seed),
            max_len: max_len.max(1),
            dictionary,
        }
    }

    /// Mutates `input` in place with a stack of random mutations; `other` is another corpus
    /// entry to splice from. The result is at most the target's input bound.
    pub fn mutate(&mut self, input: &mut Vec<u8>, other: &[u8]) {
        let stack = 1 << self.rng.below(STACK_MAX.trailing_zeros() as usize + 1);
        for _ in 0..stack {
            self.one(input, other);
        }
        input.truncate(self.max_len);
    }

    fn one(&mut self, data: &mut Vec<u8>, other: &[u8]) {
        if data.is_empty() {
            let n = self.rng.small_len(16);
            data.extend((0..n).map(|_| self.rng.byte()));
            return;
        }
        let len = data.len();
        let at = self.rng.below(len);
        match self.rng.below(17) {
            0 => data[at] ^= 1 << self.rng.below(8),
            1 => data[at] = self.rng.byte(),
            2 => {
                let delta = 1 + self.rng.below(35) as u8;
                data[at] = if self.rng.one_in(2) {
                    data[at].wrapping_add(delta)
                } else {
                    data[at].wrapping_sub(delta)
                };
            }
            3 => self.interesting(data, at),
            4 => self.varint(data, at),
            5 => self.length_prefix(data, at),
            6 => {
                // Insert random bytes, or one byte repeated (runs make lengths overflow).
                let n = self.rng.small_len(RANGE_MAX_BYTES);
                let bytes: Vec<u8> = if self.rng.one_in(2) {
                    let b = self.rng.byte();
                    vec![b; n]
                } else {
                    (0..n).map(|_| self.rng.byte()).collect()
                };
                let at = self.rng.below(len + 1);
                data.splice(at..at, bytes);
            }
            7 | 8 => {
                let n = self.rng.small_len(RANGE_MAX_BYTES).min(len - at);
                data.drain(at..at + n);
            }
            9 => {
                // Duplicate a range in place (repeated fields, repeated items).
                let n = self.rng.small_len(RANGE_MAX_BYTES).min(len - at);
                let copy = data[at..at + n].to_vec();
                data.splice(at..at, copy);
            }
            10 => {
                // Copy a range over another place in the same input.
                let n = self.rng.small_len(RANGE_MAX_BYTES).min(len - at);
                let copy = data[at..at + n].to_vec();
                let to = self.rng.below(len);
                let end = (to + n).min(len);
                data[to..end].copy_from_slice(&copy[..end - to]);
            }
            11 | 12 => self.splice(data, other),
            13 => data.truncate(at.max(1)),
            14 | 15 if !self.dictionary.is_empty() => {
                let token = self.dictionary[self.rng.below(self.dictionary.len())];
                let at = self.rng.below(len + 1);
                if self.rng.one_in(2) {
                    data.splice(at..at, token.iter().copied());
                } else {
                    let end = (at + token.len()).min(len);
                    data.splice(at..end, token.iter().copied());
                }
            }
            _ => {
                // Swap two bytes (reordered fields, reordered tags).
                let b = self.rng.below(len);
                data.swap(at, b);
            }
        }
    }

    /// Writes an interesting integer at `at`, 1, 2, 4 or 8 bytes wide, either byte order.
    fn interesting(&mut self, data: &mut [u8], at: usize) {
        let value = INTERESTING[self.rng.below(INTERESTING.len())];
        let width = 1 << self.rng.below(4);
        let be = self.rng.one_in(2);
        let all = if be {
            value.to_be_bytes()
        } else {
            value.to_le_bytes()
        };
        // The low-order `width` bytes, in the chosen order.
        let bytes = if be { &all[8 - width..] } else { &all[..width] };
        let end = (at + width).min(data.len());
        data[at..end].copy_from_slice(&bytes[..end - at]);
    }

    /// Finds the LEB128 varint that starts at `at` and replaces it with a nearby or edge
    /// value, re-encoded (so the bytes after it shift when its width changes).
    fn varint(&mut self, data: &mut Vec<u8>, at: usize) {
        let mut value: u64 = 0;
        let mut end = at;
        for (i, b) in data[at..].iter().take(10).enumerate() {
            value |= u64::from(b & 0x7f) << (7 * i as u32).min(63);
            end = at + i + 1;
            if b & 0x80 == 0 {
                break;
            }
        }
        let new = match self.rng.below(4) {
            0 => value.wrapping_add(1 + self.rng.below(16) as u64),
            1 => value.wrapping_sub(1 + self.rng.below(16) as u64),
            2 => INTERESTING[self.rng.below(INTERESTING.len())],
            _ => value.wrapping_mul(2 + self.rng.below(7) as u64),
        };
        let mut encoded = Vec::with_capacity(10);
        let mut v = new;
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                encoded.push(b);
                break;
            }
            encoded.push(b | 0x80);
        }
        data.splice(at..end, encoded);
    }

    /// Reads 4 bytes at `at` as a little-endian length and nudges it or sets an edge value.
    fn length_prefix(&mut self, data: &mut [u8], at: usize) {
        if data.len() < at + 4 {
            return;
        }
        let mut word = [0u8; 4];
        word.copy_from_slice(&data[at..at + 4]);
        let value = u32::from_le_bytes(word);
        let new = match self.rng.below(4) {
            0 => value.wrapping_add(1 + self.rng.below(8) as u32),
            1 => value.wrapping_sub(1 + self.rng.below(8) as u32),
            2 => data.len() as u32,
            _ => u32::MAX >> self.rng.below(32),
        };
        data[at..at + 4].copy_from_slice(&new.to_le_bytes());
    }

    /// Takes a range of another corpus entry: inserted, written over, or as the new tail.
    fn splice(&mut self, data: &mut Vec<u8>, other: &[u8]) {
        if other.is_empty() {
            return;
        }
        let from = self.rng.below(other.len());
        let n = self.rng.small_len(RANGE_MAX_BYTES).min(other.len() - from);
        let piece = &other[from..from + n];
        let at = self.rng.below(data.len() + 1);
        match self.rng.below(3) {
            0 => {
                data.splice(at..at, piece.iter().copied());
            }
            1 => {
                let end = (at + n).min(data.len());
                data.splice(at..end, piece.iter().copied());
            }
            _ => {
                // Crossover: our head, their tail from the same offset.
                data.truncate(at);
                data.extend_from_slice(&other[at.min(other.len())..]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_mutations() {
        let run = |seed| {
            let mut m = Mutator::new(seed, 1024, &[b"token"]);
            let mut data = b"hello, fuzzing world".to_vec();
            for _ in 0..200 {
                m.mutate(&mut data, b"another corpus entry");
            }
            data
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn mutations_respect_the_input_bound() {
        let mut m = Mutator::new(1, 64, &[]);
        let mut data = vec![0u8; 64];
        for _ in 0..10_000 {
            m.mutate(&mut data, &[1u8; 300]);
            assert!(data.len() <= 64);
        }
    }
}
