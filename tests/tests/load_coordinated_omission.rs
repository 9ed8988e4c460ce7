//! Coordinated omission: a server that stalls once for a known time.
//!
//! Rate mode, 200 req/s constant for 3 s over one connection with one
//! request in flight; request number 100 (at about 0.5 s) is answered after
//! a 500 ms stall. The 100 requests due during the stall wait behind it. Measured from
//! their intended times (corrected) the stall shows up in the tail: about
//! 100 requests of 600 have latencies falling from 500 ms to 0, so p90 is
//! near 500 - 60 * 5 = 200 ms, p99 near 500 - 6 * 5 = 470 ms and the max
//! near 500 ms. Measured from when they were sent (uncorrected) only the
//! stalled request is slow: p99 is small, max about 500 ms.
//!
//! Tolerances: corrected max 490..700 ms, p99 400..600 ms, p90 120..320 ms;
//! uncorrected p99 below 50 ms and max 490..700 ms.

mod load_support;

use std::{sync::Arc, time::Duration};

use load_support::{ok, TestServer};
use tailprobe::load::{self, schedule::Arrival, target::Target, LoadOptions, Mode, Slo};

#[test]
fn corrected_percentiles_show_the_stall_uncorrected_do_not() {
    let server = TestServer::start(Arc::new(|n, _, s| {
        if n == 100 {
            std::thread::sleep(Duration::from_millis(500));
        }
        ok(s)
    }));
    let opts = LoadOptions {
        target: Target::new(&server.url("/"), "GET", &[], None).expect("target"),
        mode: Mode::Open {
            rate: 200.0,
            arrival: Arrival::Constant,
            seed: 1,
            connections: 1,
            max_in_flight: 1,
        },
        n_requests: None,
        duration: Some(Duration::from_secs(3)),
        warmup: 0,
        timeout: Duration::from_secs(5),
        request: load::RequestSpec {
            api: load::target::Api::Plain,
            ..load::RequestSpec::default()
        },
        slo: Slo::default(),
        threads: 1,
        cpus: None,
        requests_out: None,
        progress: false,
        stop: None,
    };
    let r = load::run(&opts).expect("run");
    assert_eq!(
        (r.ok, r.errors, r.timeouts),
        (600, 0, 0),
        "{:?}",
        r.error_kinds
    );
    let corr = r.latency_ms.e2e_sched.expect("corrected");
    let unc = r.latency_ms.e2e.expect("uncorrected");
    eprintln!(
        "corrected p90 {:.1} p99 {:.1} max {:.1}; uncorrected p90 {:.2} p99 {:.2} max {:.1} (ms)",
        corr.p90.value, corr.p99.value, corr.max, unc.p90.value, unc.p99.value, unc.max
    );
    assert!(
        (490.0..700.0).contains(&corr.max),
        "corrected max {}",
        corr.max
    );
    assert!(
        (400.0..600.0).contains(&corr.p99.value),
        "corrected p99 {}",
        corr.p99.value
    );
    assert!(
        (120.0..320.0).contains(&corr.p90.value),
        "corrected p90 {}",
        corr.p90.value
    );
    assert!(unc.p99.value < 50.0, "uncorrected p99 {}", unc.p99.value);
    assert!(
        (490.0..700.0).contains(&unc.max),
        "uncorrected max {}",
        unc.max
    );
    assert_eq!(r.headline, "e2e_sched");
    // The lag shows why: the requests left late, up to the stall.
    let lag = r.latency_ms.schedule_lag.expect("lag");
    assert!(lag.max > 400.0, "lag max {}", lag.max);
}
