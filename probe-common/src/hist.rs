//! Log-linear histogram buckets shared by the kernel and userspace.
//!
//! Values below 2^SUB_BITS nanoseconds get one bucket each. Above that, each
//! power of two is split into 2^SUB_BITS equal sub-buckets, so a bucket is at
//! most 1/16 = 6.25% wide relative to its lower bound: a percentile read from
//! the bucket midpoint is within about 3% of the true value. The last bucket
//! collects everything from about 33 s up (2^MAX_POW ns is about 17 s; the
//! recorder drops waits over 60 s as bad deltas).
//!
//! `bucket_index` uses no loops, no indexing and no division so the eBPF
//! verifier accepts it.

/// Sub-bucket bits per power of two.
pub const SUB_BITS: u32 = 4;
const SUB: u64 = 1 << SUB_BITS;
/// Highest power of two with its own range (2^34 ns ~ 17 s).
pub const MAX_POW: u32 = 34;
/// Number of buckets: 512, a power of two, so that the programs can bound
/// a bucket number read back from memory with a mask instead of a branch
/// (`HIST_MASK`; the verifier walks a branch per pending wait otherwise).
pub const HIST_BUCKETS: usize = ((MAX_POW - SUB_BITS + 2) as usize) * (SUB as usize);
/// `HIST_BUCKETS - 1`: every bucket number, as a mask.
pub const HIST_MASK: usize = HIST_BUCKETS - 1;
const _: () = assert!(HIST_BUCKETS.is_power_of_two());

/// Index of the most significant set bit of `v` (v > 0), without loops.
#[inline(always)]
fn msb(mut v: u64) -> u32 {
    let mut r = 0u32;
    if v >= 1 << 32 {
        v >>= 32;
        r += 32;
    }
    if v >= 1 << 16 {
        v >>= 16;
        r += 16;
    }
    if v >= 1 << 8 {
        v >>= 8;
        r += 8;
    }
    if v >= 1 << 4 {
        v >>= 4;
        r += 4;
    }
    if v >= 1 << 2 {
        v >>= 2;
        r += 2;
    }
    if v >= 1 << 1 {
        r += 1;
    }
    r
}

/// Bucket for a value in nanoseconds. Always `< HIST_BUCKETS`.
#[inline(always)]
pub fn bucket_index(v: u64) -> usize {
    if v < SUB {
        return v as usize;
    }
    let p = msb(v);
    if p > MAX_POW {
        return HIST_BUCKETS - 1;
    }
    let sub = (v >> (p - SUB_BITS)) & (SUB - 1);
    let idx = ((p - SUB_BITS + 1) as u64) * SUB + sub;
    if idx >= HIST_BUCKETS as u64 {
        HIST_BUCKETS - 1
    } else {
        idx as usize
    }
}

/// Smallest value that falls into bucket `i`.
pub fn bucket_lower_bound(i: usize) -> u64 {
    let i = i as u64;
    if i < SUB {
        return i;
    }
    let p = i / SUB - 1 + SUB_BITS as u64;
    let sub = i % SUB;
    (1u64 << p) + (sub << (p - SUB_BITS as u64))
}

/// Largest value that falls into bucket `i` (the last bucket is open-ended:
/// `u64::MAX`).
pub fn bucket_upper_bound(i: usize) -> u64 {
    if i + 1 >= HIST_BUCKETS {
        return u64::MAX;
    }
    bucket_lower_bound(i + 1) - 1
}

#[cfg(test)]
mod msb_tests {
    use super::*;

    #[test]
    fn msb_is_the_top_bit() {
        let mut v = 1u64;
        for p in 0..64u32 {
            for x in [v, v | (v >> 1), v | 1, v | (v - 1)] {
                assert_eq!(msb(x), 63 - x.leading_zeros(), "{x:#x}");
            }
            assert_eq!(msb(v), p);
            v = v.wrapping_shl(1);
        }
        assert_eq!(msb(u64::MAX), 63);
    }

    #[test]
    fn buckets_grow_with_the_value() {
        let mut last = 0;
        for v in (0..40u32).flat_map(|p| [1u64 << p, (1u64 << p) + (1u64 << p) / 3]) {
            let b = bucket_index(v);
            assert!(b >= last && b < HIST_BUCKETS, "{v}: {b} after {last}");
            assert!(bucket_lower_bound(b) <= v, "{v}: bucket {b}");
            last = b;
        }
    }
}
