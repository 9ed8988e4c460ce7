//! Property tests for the parsers of what the kernel and the user hand us:
//! CPU lists, `/proc/interrupts`, `numa_maps`, tracefs `format` files and
//! experiment plan files. Any input: no panic. Inputs made by a writer (or
//! rendered here the way the kernel writes them): parsed back to the same
//! values. Case counts are bounded so the whole file runs in seconds inside
//! `cargo test` (and so in `cargo xtask test`).

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use proptest::prelude::*;
use tailprobe::{
    cpulist,
    experiment::plan::Plan,
    kernel::tracefs,
    node::{irq, numa},
};

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Text that looks like the files: digits, separators, letters, newlines,
/// and any other character now and then.
fn texty() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            8 => prop::sample::select(vec![
                "0", "1", "9", "-", ",", ":", " ", "\t", "\n", "=", "N", "CPU", ";",
                "field:", "offset:", "size:", "signed:", "0x", "[", "]", "*",
                "18446744073709551615", "4294967296", "kernelpagesize_kB=",
                "name:", "ID:", "print fmt:", "\"", "[server]", "repeats", "sweep",
            ])
            .prop_map(str::to_string),
            1 => any::<char>().prop_map(|c| c.to_string()),
        ],
        0..64,
    )
    .prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn cpulist_never_panics(s in texty()) {
        if let Ok(c) = cpulist::parse(&s) {
            prop_assert!(c.windows(2).all(|w| w[0] < w[1]));
            prop_assert!(c.iter().all(|&x| x <= cpulist::MAX_CPU));
        }
        let _ = cpulist::parse_maybe_empty(&s);
    }

    #[test]
    fn cpulist_round_trips(mut cpus in prop::collection::vec(0u32..=cpulist::MAX_CPU, 1..200)) {
        cpus.sort_unstable();
        cpus.dedup();
        let text = cpulist::Display(&cpus).to_string();
        prop_assert_eq!(cpulist::parse(&text).unwrap(), cpus);
    }

    #[test]
    fn interrupts_never_panic(s in texty()) {
        let _ = irq::parse_interrupts(&s);
    }

    #[test]
    fn interrupts_round_trip(
        cpus in prop::collection::btree_set(0u32..64, 1..8),
        rows in prop::collection::vec(
            ("[0-9]{1,4}|[A-Z]{3}", prop::collection::vec(any::<u64>(), 8), "[ -~]{0,30}"),
            0..20,
        ),
    ) {
        let cpus: Vec<u32> = cpus.into_iter().collect();
        let mut text = String::from("    ");
        for c in &cpus {
            text.push_str(&format!("       CPU{c}"));
        }
        text.push('\n');
        for (name, counts, desc) in &rows {
            text.push_str(&format!("{name:>4}:"));
            for n in &counts[..cpus.len()] {
                text.push_str(&format!(" {n:>10}"));
            }
            text.push_str(&format!("   {desc}\n"));
        }
        let parsed = irq::parse_interrupts(&text).unwrap();
        prop_assert_eq!(&parsed.cpus, &cpus);
        prop_assert_eq!(parsed.rows.len(), rows.len());
        for (row, (name, counts, _)) in parsed.rows.iter().zip(&rows) {
            prop_assert_eq!(&row.name, name);
            prop_assert_eq!(&row.counts[..], &counts[..cpus.len()]);
        }
    }

    #[test]
    fn numa_maps_never_panic(s in texty()) {
        let p = numa::parse_numa_maps(&s);
        let _ = numa::remote_share(&p, &[0]);
        let _ = numa::parse_kv(&s);
    }

    #[test]
    fn numa_maps_sum_pages(
        lines in prop::collection::vec(
            (
                prop::collection::btree_map(0u32..4, 0u64..1_000_000, 0..4),
                prop::sample::select(vec![4u64, 2048, 1_048_576]),
            ),
            0..30,
        ),
    ) {
        let mut text = String::new();
        let mut want = std::collections::BTreeMap::<u32, u64>::new();
        for (i, (nodes, kib)) in lines.iter().enumerate() {
            text.push_str(&format!("7f{i:010x} default anon=1 dirty=1"));
            for (n, pages) in nodes {
                text.push_str(&format!(" N{n}={pages}"));
                *want.entry(*n).or_default() += pages * kib;
            }
            text.push_str(&format!(" kernelpagesize_kB={kib}\n"));
        }
        let p = numa::parse_numa_maps(&text);
        prop_assert_eq!(p.kib_per_node, want);
    }

    #[test]
    fn tracefs_format_never_panics(s in texty()) {
        let _ = tracefs::parse_format(&s);
    }

    #[test]
    fn tracefs_format_round_trips(
        id in any::<u32>(),
        fields in prop::collection::btree_map(
            "[a-z_][a-z0-9_]{0,15}",
            (0u32..4096, 1u32..64, any::<bool>(), any::<bool>()),
            1..12,
        ),
    ) {
        let mut text = format!("name: sched_test\nID: {id}\nformat:\n");
        for (name, (offset, size, signed, array)) in &fields {
            let decl = if *array {
                format!("char {name}[16]")
            } else {
                format!("unsigned long {name}")
            };
            text.push_str(&format!(
                "\tfield:{decl};\toffset:{offset};\tsize:{size};\tsigned:{};\n",
                u8::from(*signed)
            ));
        }
        text.push_str("\nprint fmt: \"x=%d\", REC->x\n");
        let f = tracefs::parse_format(&text);
        prop_assert_eq!(f.name.as_str(), "sched_test");
        prop_assert_eq!(f.id, Some(id));
        prop_assert_eq!(f.fields.len(), fields.len());
        for (name, (offset, size, signed, _)) in &fields {
            let got = f.field(name).unwrap();
            prop_assert_eq!((got.offset, got.size, got.signed), (*offset, *size, *signed));
        }
    }

    #[test]
    fn plan_text_never_panics(s in texty()) {
        let _ = Plan::from_toml(&s, "fuzz.toml");
    }

    /// A valid plan with one key's value replaced by another value of any
    /// TOML type: parsed or refused with an error, never a panic.
    #[test]
    fn plan_values_never_panic(
        key in prop::sample::select(plan_keys()),
        value in prop_oneof![
            any::<i64>().prop_map(|v| v.to_string()),
            any::<f64>().prop_map(|v| format!("{v:?}")),
            "[a-z:0-9.-]{0,12}".prop_map(|v| format!("{v:?}")),
            prop::collection::vec("[a-z:0-9.-]{0,8}", 0..4).prop_map(|v| format!("{v:?}")),
            Just("nan".to_string()),
            Just("inf".to_string()),
            Just("-inf".to_string()),
        ],
    ) {
        let text = default_plan_text()
            .lines()
            .map(|l| match l.split_once(" = ") {
                Some((k, _)) if k == key => format!("{k} = {value}"),
                _ => l.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n");
        let _ = Plan::from_toml(&text, "fuzz.toml");
    }
}

/// The default plan as TOML (the writer of plan files).
fn default_plan_text() -> String {
    toml::to_string(&Plan::default()).unwrap()
}

fn plan_keys() -> Vec<String> {
    default_plan_text()
        .lines()
        .filter_map(|l| l.split_once(" = ").map(|(k, _)| k.to_string()))
        .collect()
}

#[test]
fn plan_round_trips_through_its_writer() {
    let text = default_plan_text();
    let back = Plan::from_toml(&text, "default.toml").unwrap();
    assert_eq!(back, Plan::default());
    assert!(plan_keys().len() > 5, "{text}");
}
