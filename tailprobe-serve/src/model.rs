//! The "model": real CPU work shaped like inference, deterministic.
//!
//! Prefill runs every prompt token through every layer (one dense
//! matrix-vector product of `hidden x hidden` per layer and token), so its
//! cost is proportional to the prompt length; each decode step runs one
//! token through every layer and picks the next token from the state. The
//! same prompt always produces the same output.

/// y = W x (W row-major, n x n), with eight independent partial sums per
/// row so the compiler can keep them in SIMD registers.
pub fn matvec(w: &[f32], x: &[f32], y: &mut [f32]) {
    let n = x.len();
    for (row, out) in w.chunks_exact(n).zip(y.iter_mut()) {
        let mut acc = [0f32; 8];
        let (rc, xc) = (row.chunks_exact(8), x.chunks_exact(8));
        let tail: f32 = rc
            .remainder()
            .iter()
            .zip(xc.remainder())
            .map(|(a, b)| a * b)
            .sum();
        for (r, v) in rc.zip(xc) {
            for (a, (p, q)) in acc.iter_mut().zip(r.iter().zip(v)) {
                *a += p * q;
            }
        }
        *out = acc.iter().sum::<f32>() + tail;
    }
}

/// A small fixed vocabulary for the generated text.
const VOCAB: [&str; 32] = [
    " the", " a", " model", " token", " kernel", " thread", " waits", " runs", " on", " CPU",
    " queue", " latency", " tail", " is", " long", " short", " because", " of", " the", " cache",
    " memory", " request", " reply", " fast", " slow", " and", " then", " it", " was", " here",
    ".", ",",
];

/// Dense weights shared (read-only) by every worker thread.
#[derive(Debug)]
pub struct Model {
    hidden: usize,
    layers: Vec<Vec<f32>>,
}

/// A request's running state.
#[derive(Debug, Clone)]
pub struct State {
    x: Vec<f32>,
    y: Vec<f32>,
}

/// Token ids of a text: one per whitespace-separated word (at least one).
pub fn tokenize(text: &str) -> Vec<u32> {
    let mut t: Vec<u32> = text
        .split_whitespace()
        .map(|w| {
            // FNV-1a of the word.
            w.bytes().fold(0x811c_9dc5u32, |h, b| {
                (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
            })
        })
        .collect();
    if t.is_empty() {
        t.push(0);
    }
    t
}

/// The text of a generated token.
pub fn detokenize(token: u32) -> &'static str {
    VOCAB[token as usize % VOCAB.len()]
}

impl Model {
    pub fn new(hidden: usize, layers: usize) -> Model {
        let hidden = hidden.max(1);
        let scale = 1.0 / (hidden as f32).sqrt();
        let layers = (0..layers.max(1))
            .map(|l| {
                (0..hidden * hidden)
                    .map(|i| {
                        let h = (i as u32 ^ (l as u32).wrapping_mul(0x9e37_79b9))
                            .wrapping_mul(2_654_435_761);
                        (((h >> 16) & 0xff) as f32 / 255.0 - 0.5) * scale
                    })
                    .collect()
            })
            .collect();
        Model { hidden, layers }
    }

    pub fn hidden(&self) -> usize {
        self.hidden
    }

    pub fn layers(&self) -> usize {
        self.layers.len()
    }

    /// Multiply-adds per token (one pass through every layer).
    pub fn flops_per_token(&self) -> u64 {
        2 * (self.hidden * self.hidden * self.layers.len()) as u64
    }

    fn embed(&self, x: &mut [f32], token: u32) {
        for (i, v) in x.iter_mut().enumerate() {
            let h = (token ^ i as u32).wrapping_mul(0x85eb_ca6b);
            *v += ((h >> 20) & 0xff) as f32 / 255.0 - 0.5;
        }
    }

    fn forward(&self, st: &mut State) {
        for w in &self.layers {
            matvec(w, &st.x, &mut st.y);
            // Bounded non-linearity; the output is the next layer's input.
            for (x, y) in st.x.iter_mut().zip(&st.y) {
                *x = y.clamp(-4.0, 4.0) * 0.5 + *x * 0.5;
            }
        }
    }

    /// Run the prompt through the model: `prompt.len()` forward passes.
    pub fn prefill(&self, prompt: &[u32]) -> State {
        let mut st = State {
            x: vec![0.0; self.hidden],
            y: vec![0.0; self.hidden],
        };
        for &t in prompt {
            self.embed(&mut st.x, t);
            self.forward(&mut st);
        }
        st
    }

    /// `prefill`, checking `cancelled` before every prompt token (each is
    /// one pass through every layer): `None` when it was cancelled, so a
    /// long prompt stops costing CPU soon after its client leaves.
    pub fn prefill_until(&self, prompt: &[u32], cancelled: impl Fn() -> bool) -> Option<State> {
        let mut st = State {
            x: vec![0.0; self.hidden],
            y: vec![0.0; self.hidden],
        };
        for &t in prompt {
            if cancelled() {
                return None;
            }
            self.embed(&mut st.x, t);
            self.forward(&mut st);
        }
        Some(st)
    }

    /// One decode step: a forward pass, then pick the next token.
    pub fn decode(&self, st: &mut State) -> u32 {
        self.forward(st);
        let mut h = 0u32;
        for v in st.x.iter().take(16) {
            h = h.rotate_left(5) ^ ((v * 1024.0) as i32 as u32);
        }
        let token = h % VOCAB.len() as u32;
        self.embed(&mut st.x, token);
        token
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matvec_matches_the_naive_product() {
        let n = 13;
        let w: Vec<f32> = (0..n * n).map(|i| (i % 7) as f32 - 3.0).collect();
        let x: Vec<f32> = (0..n).map(|i| (i % 3) as f32).collect();
        let mut y = vec![0.0; n];
        matvec(&w, &x, &mut y);
        for (r, out) in y.iter().enumerate() {
            let want: f32 = (0..n).map(|c| w[r * n + c] * x[c]).sum();
            assert_eq!(*out, want);
        }
    }

    #[test]
    fn deterministic_output() {
        let m = Model::new(32, 2);
        let run = |p: &str| {
            let mut st = m.prefill(&tokenize(p));
            (0..8).map(|_| m.decode(&mut st)).collect::<Vec<_>>()
        };
        assert_eq!(run("hello there"), run("hello there"));
        assert_eq!(run("hello there").len(), 8);
        assert!(run("x").iter().all(|&t| (t as usize) < VOCAB.len()));
    }

    #[test]
    fn prefill_stops_when_cancelled() {
        let m = Model::new(16, 2);
        let p = tokenize("a b c d e f");
        let full = m.prefill(&p);
        let same = m.prefill_until(&p, || false).unwrap();
        assert_eq!((full.x, full.y), (same.x, same.y));
        let checks = std::cell::Cell::new(0);
        let r = m.prefill_until(&p, || {
            checks.set(checks.get() + 1);
            checks.get() > 2
        });
        assert!(r.is_none());
        assert_eq!(checks.get(), 3, "stopped at the first check that said so");
    }

    #[test]
    fn tokenizer_counts_words() {
        assert_eq!(tokenize("a b  c\n d").len(), 4);
        assert_eq!(tokenize("").len(), 1);
        assert_eq!(tokenize("a b")[0], tokenize("a")[0]);
        assert!(!detokenize(12345).is_empty());
    }

    #[test]
    fn prefill_cost_grows_with_the_prompt() {
        let m = Model::new(256, 2);
        let time = |n: usize| {
            let p = vec![1u32; n];
            let t = std::time::Instant::now();
            for _ in 0..3 {
                std::hint::black_box(m.prefill(&p));
            }
            t.elapsed()
        };
        let (short, long) = (time(4), time(64));
        // 16x the work; allow a wide margin for a loaded machine.
        assert!(long > short * 4, "short {short:?} long {long:?}");
    }
}
