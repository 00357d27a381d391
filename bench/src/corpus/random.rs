//! The corpus's randomness: SplitMix64 streams, deterministic `ln`/`exp` (no libm), and
//! Walker's alias tables.

/// The SplitMix64 pseudo-random generator (Steele, Lea & Flood 2014).
///
/// Tiny, fast, and defined here so that the generated corpus never depends on
/// an external crate's algorithm.
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    pub(super) state: u64,
}

impl SplitMix64 {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    /// The next 64 pseudo-random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `0..n` (Lemire's multiply-shift; `n` must be > 0).
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// Mixes a seed with a stream number into an independent seed.
pub(super) fn derive_seed(seed: u64, stream: u64) -> u64 {
    let mut g = SplitMix64::new(seed ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03));
    g.next_u64();
    g.next_u64()
}

pub(super) const LN2: f64 = std::f64::consts::LN_2;

/// Natural logarithm of `x >= 1` using only IEEE basic operations (exactly
/// rounded everywhere), so results are bit-identical on every platform.
pub(super) fn det_ln(x: f64) -> f64 {
    debug_assert!(x >= 1.0 && x.is_finite());
    let bits = x.to_bits();
    let mut e = ((bits >> 52) & 0x7ff) as i64 - 1023;
    // m in [1, 2)
    let mut m = f64::from_bits((bits & ((1u64 << 52) - 1)) | (1023u64 << 52));
    if m > std::f64::consts::SQRT_2 {
        m /= 2.0;
        e += 1;
    }
    // ln m = 2 atanh(z), z = (m-1)/(m+1), |z| <= 0.172
    let z = (m - 1.0) / (m + 1.0);
    let z2 = z * z;
    let mut term = z;
    let mut sum = 0.0;
    let mut k = 1.0;
    for _ in 0..16 {
        sum += term / k;
        term *= z2;
        k += 2.0;
    }
    e as f64 * LN2 + 2.0 * sum
}

/// `exp(y)` for `y <= 0` using only IEEE basic operations.
pub(super) fn det_exp(y: f64) -> f64 {
    debug_assert!(y <= 0.0 && y > -700.0);
    let n = (y / LN2).round();
    let r = y - n * LN2; // |r| <= ~0.35
    let mut term = 1.0;
    let mut sum = 1.0;
    for i in 1..=22 {
        term *= r / f64::from(i);
        sum += term;
    }
    // multiply by 2^n exactly
    let scale = f64::from_bits(((1023 + n as i64) as u64) << 52);
    sum * scale
}

/// One bucket of an [`AliasTable`] (threshold and alias side by side, so a
/// draw touches a single cache line).
#[derive(Clone, Copy, Debug)]
pub(super) struct Bucket {
    /// Acceptance threshold, scaled to 2^32.
    pub(super) thresh: u32,
    /// Alternative outcome.
    pub(super) alias: u32,
}

/// Walker/Vose alias table for O(1) sampling from a discrete distribution.
#[derive(Clone, Debug)]
pub struct AliasTable {
    pub(super) buckets: Vec<Bucket>,
}

impl AliasTable {
    /// Builds a table for the given non-negative weights (not all zero).
    pub fn new(weights: &[f64]) -> Self {
        let n = weights.len();
        assert!(n > 0 && n < u32::MAX as usize, "bad alias table size {n}");
        let sum: f64 = weights.iter().sum();
        assert!(sum > 0.0, "weights sum to zero");
        let mut p: Vec<f64> = weights.iter().map(|w| w * n as f64 / sum).collect();
        let mut thresh = vec![u32::MAX; n];
        let mut alias: Vec<u32> = (0..n as u32).collect();
        let mut small: Vec<usize> = Vec::new();
        let mut large: Vec<usize> = Vec::new();
        for (i, &pi) in p.iter().enumerate() {
            if pi < 1.0 {
                small.push(i);
            } else {
                large.push(i);
            }
        }
        while let (Some(&s), Some(&l)) = (small.last(), large.last()) {
            small.pop();
            large.pop();
            thresh[s] = (p[s] * 4_294_967_296.0).min(u32::MAX as f64) as u32;
            alias[s] = l as u32;
            p[l] = (p[l] + p[s]) - 1.0;
            if p[l] < 1.0 {
                small.push(l);
            } else {
                large.push(l);
            }
        }
        // Leftovers (numerically ~1.0) keep thresh = MAX, alias = self.
        let buckets = thresh.into_iter().zip(alias).map(|(thresh, alias)| Bucket { thresh, alias }).collect();
        AliasTable { buckets }
    }

    /// Number of outcomes.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether the table has no outcomes (never true for a constructed table).
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// Draws one outcome index.
    #[inline]
    pub fn sample(&self, rng: &mut SplitMix64) -> usize {
        let r = rng.next_u64();
        let i = (((r >> 32) * self.buckets.len() as u64) >> 32) as usize;
        let b = self.buckets[i];
        // Branch-free select (the comparison is unpredictable in the tail).
        let take_alias = usize::from((r as u32) >= b.thresh).wrapping_neg();
        i ^ ((i ^ b.alias as usize) & take_alias)
    }
}
