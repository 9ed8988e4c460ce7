//! Accounting one request's outcome into the generator thread's
//! statistics and its record: ok, incomplete (judged by `complete`), an
//! error, or a timeout; and the SLO check of a success.

use std::{borrow::Cow, sync::atomic::Ordering, time::Duration};

use super::{
    client::Timing,
    complete::{self, Verdict},
    progress::Live,
    records::RequestRecord,
    spec,
    stats::Stats,
    Local, Outcome, Slo,
};
use tailprobe_system::clock::monotonic_ns;

impl Local {
    pub(super) fn account(&self, id: u64, intended: Option<u64>, sent: u64, outcome: Outcome) {
        let opts = &self.shared.opts;
        let warm = id < opts.warmup;
        let start = intended.unwrap_or(sent);
        let timeout_ns = opts.timeout.as_nanos() as u64;
        let mut rec = RequestRecord {
            id,
            warmup: warm,
            intended_ns: intended,
            sent_ns: sent,
            first_byte_ns: None,
            first_token_ns: None,
            end_ns: 0,
            status: 0,
            outcome: Cow::Borrowed(""),
            incomplete: None,
            output_tokens: None,
            bytes: 0,
            tid: self.tid,
        };
        let mut st = self.stats.borrow_mut();
        let st = &mut *st;
        if warm {
            st.warmup += 1;
        } else if intended.is_some() {
            st.lag.record(sent.saturating_sub(start));
        }
        let headline = |e2e: u64, end: u64| {
            if intended.is_some() {
                end.saturating_sub(start)
            } else {
                e2e
            }
        };
        match outcome {
            Outcome::TimedOut => {
                rec.end_ns = sent + timeout_ns;
                rec.outcome = Cow::Borrowed("timeout");
                if !warm {
                    st.timeouts += 1;
                    st.e2e.record(timeout_ns);
                    if intended.is_some() {
                        st.e2e_sched.record(rec.end_ns.saturating_sub(start));
                    }
                    st.window(start, rec.end_ns);
                    self.shared
                        .live
                        .record(false, true, headline(timeout_ns, rec.end_ns));
                }
            }
            Outcome::Failed(e) => {
                rec.end_ns = monotonic_ns();
                rec.outcome = Cow::Borrowed(e.kind());
                if !warm {
                    st.error(e.kind());
                    st.window(start, rec.end_ns);
                    self.shared.live.record(false, false, 0);
                }
            }
            Outcome::Done(t) => self.account_answer(t, warm, intended, sent, &mut rec, st),
        }
        if let Some(w) = &self.shared.records {
            if w.write(&rec).is_err() {
                self.shared.record_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Account an answer that arrived: ok, incomplete, or an error.
    fn account_answer(
        &self,
        t: Timing,
        warm: bool,
        intended: Option<u64>,
        sent: u64,
        rec: &mut RequestRecord,
        st: &mut Stats,
    ) {
        let opts = &self.shared.opts;
        let start = intended.unwrap_or(sent);
        let headline = |e2e: u64, end: u64| {
            if intended.is_some() {
                end.saturating_sub(start)
            } else {
                e2e
            }
        };
        rec.end_ns = t.end_ns;
        rec.status = t.status;
        rec.first_byte_ns = Some(t.first_byte_ns);
        rec.bytes = t.bytes;
        let stream = t.stream.as_ref();
        let first_token = match stream {
            Some(s) => s.first_token_ns,
            None => t.first_body_ns,
        };
        rec.first_token_ns = first_token;
        let verdict = self.judge(&t);
        let out_tokens = match (&verdict, stream) {
            (Ok(Verdict::Complete { tokens, .. }), _) => *tokens,
            (_, Some(s)) => Some(s.output_tokens()),
            _ => None,
        };
        rec.output_tokens = out_tokens;
        let failed = |st: &mut Stats, live: &Live| {
            st.window(start, t.end_ns);
            live.record(false, false, 0);
        };
        match verdict {
            Err(kind) => {
                rec.outcome = kind.clone();
                if !warm {
                    if st.error_sample.is_none() && !(200..300).contains(&t.status) {
                        st.error_sample = Some(format!(
                            "HTTP {}: {}",
                            t.status,
                            spec::quote_answer(&t.body)
                        ));
                    }
                    st.error(&kind);
                    failed(st, &self.shared.live);
                }
            }
            Ok(Verdict::Incomplete(why)) => {
                rec.outcome = Cow::Borrowed("incomplete");
                rec.incomplete = Some(why);
                if !warm {
                    st.incomplete(why);
                    failed(st, &self.shared.live);
                }
            }
            Ok(Verdict::Complete { stopped_early, .. }) => {
                rec.outcome = Cow::Borrowed("ok");
                if warm {
                    return;
                }
                let e2e = t.end_ns.saturating_sub(sent);
                st.ok += 1;
                st.stopped_early += u64::from(stopped_early);
                st.bytes = st.bytes.saturating_add(t.bytes);
                st.window(start, t.end_ns);
                st.e2e.record(e2e);
                if intended.is_some() {
                    st.e2e_sched.record(t.end_ns.saturating_sub(start));
                }
                let mut ttft_head = None;
                let mut tpot = None;
                if opts.request.api.is_openai() || stream.is_some() {
                    if let Some(ft) = first_token {
                        st.ttft.record(ft.saturating_sub(sent));
                        if intended.is_some() {
                            st.ttft_sched.record(ft.saturating_sub(start));
                        }
                        ttft_head = Some(headline(ft.saturating_sub(sent), ft));
                    }
                    if let Some(s) = stream {
                        tpot = s.tpot_ns();
                        if let Some(v) = tpot {
                            st.tpot.record(v);
                        }
                        if !s.done {
                            st.streams_without_done += 1;
                        }
                    }
                    for g in &t.itl {
                        st.itl.record(*g);
                    }
                    if let Some(n) = out_tokens {
                        st.output_tokens = st.output_tokens.saturating_add(n);
                        st.tokens.record(n);
                    }
                }
                let head = headline(e2e, t.end_ns);
                if opts.slo.is_set() && meets_slo(&opts.slo, ttft_head, tpot, head) {
                    st.good += 1;
                }
                self.shared.live.record(true, false, head);
            }
        }
    }

    /// The verdict on an answer: an error kind, or complete/incomplete.
    fn judge(&self, t: &Timing) -> Result<Verdict, Cow<'static, str>> {
        if !(200..300).contains(&t.status) {
            return Err(Cow::Owned(format!("http_{}", t.status)));
        }
        let expect = &self.shared.expect;
        match &t.stream {
            Some(s) if s.error.is_some() => Err(Cow::Borrowed("stream_error")),
            Some(s) => Ok(complete::judge_stream(s, expect)),
            None if self.shared.opts.request.api.is_openai() => {
                Ok(complete::judge_body(&t.body, expect))
            }
            None => Ok(Verdict::Complete {
                tokens: None,
                stopped_early: false,
            }),
        }
    }
}

/// Whether one successful request met every objective (a one-token answer
/// has no TPOT: it cannot miss it).
pub(super) fn meets_slo(slo: &Slo, ttft: Option<u64>, tpot: Option<u64>, e2e: u64) -> bool {
    let within = |limit: Option<Duration>, v: Option<u64>| match limit {
        None => true,
        Some(l) => v.is_some_and(|v| v <= l.as_nanos() as u64),
    };
    let tpot_ok = slo.tpot.is_none() || tpot.is_none() || within(slo.tpot, tpot);
    within(slo.ttft, ttft) && tpot_ok && within(slo.e2e, Some(e2e))
}
