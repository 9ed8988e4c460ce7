//! Tests of `node::journal` (fixture knobs under a temporary root).
//! (Test-only: its parent declares it under `#[cfg(test)]`.)
use super::*;

fn fake_proc(dir: &Path, boot: &str) -> PathBuf {
    let p = dir.join("proc");
    fs::create_dir_all(p.join("sys/kernel/random")).unwrap();
    fs::write(p.join("sys/kernel/random/boot_id"), format!("{boot}\n")).unwrap();
    p
}

#[test]
fn change_is_journaled_before_and_restored_on_drop() {
    let d = tempfile::tempdir().unwrap();
    let proc = fake_proc(d.path(), "boot-a");
    let knob = d.path().join("scaling_governor");
    fs::write(&knob, "powersave\n").unwrap();
    let jp = d.path().join("j/journal.json");
    {
        let (mut j, rec) = Journal::begin(&jp, &proc).unwrap();
        assert!(matches!(rec, Recovered::Nothing));
        j.set_file(&knob, "governor of policy0", "performance")
            .unwrap();
        assert_eq!(fs::read_to_string(&knob).unwrap(), "performance\n");
        let on_disk: JournalData = serde_json::from_slice(&fs::read(&jp).unwrap()).unwrap();
        assert_eq!(on_disk.entries.len(), 1);
        assert_eq!(on_disk.entries[0].original, "powersave");
        assert_eq!(on_disk.boot_id, "boot-a");
        // A second change of the same knob keeps the first original.
        j.set_file(&knob, "governor of policy0", "schedutil")
            .unwrap();
        assert_eq!(j.entries().len(), 1);
    }
    assert_eq!(fs::read_to_string(&knob).unwrap(), "powersave\n");
    assert!(!jp.exists());
}

#[test]
fn restored_on_panic() {
    let d = tempfile::tempdir().unwrap();
    let proc = fake_proc(d.path(), "boot-a");
    let knob = d.path().join("numa_balancing");
    fs::write(&knob, "1\n").unwrap();
    let jp = d.path().join("journal.json");
    let (k, p, j2) = (knob.clone(), proc.clone(), jp.clone());
    let r = std::panic::catch_unwind(move || {
        let (mut j, _) = Journal::begin(&j2, &p).unwrap();
        j.set_file(&k, "numa balancing", "0").unwrap();
        panic!("boom");
    });
    assert!(r.is_err());
    assert_eq!(fs::read_to_string(&knob).unwrap(), "1\n");
}

#[test]
fn crashed_journal_is_restored_by_the_next_session() {
    let d = tempfile::tempdir().unwrap();
    let proc = fake_proc(d.path(), "boot-a");
    let knob = d.path().join("smp_affinity_list");
    // The state a kill -9 leaves: knob changed, journal not held.
    fs::write(&knob, "0-1\n").unwrap();
    let jp = d.path().join("journal.json");
    let data = JournalData {
        version: VERSION,
        boot_id: "boot-a".into(),
        owner_pid: 999_999,
        held: false,
        created_unix: 0,
        entries: vec![Entry {
            knob: Knob::File {
                path: knob.clone(),
                what: "affinity of IRQ 30".into(),
            },
            original: "5".into(),
        }],
        unrestorable: Vec::new(),
    };
    write(&jp, &data).unwrap();
    let (j, rec) = Journal::begin(&jp, &proc).unwrap();
    match rec {
        Recovered::Crash(rep) => assert_eq!(rep.restored.len(), 1),
        other => panic!("expected a crash recovery, got {other:?}"),
    }
    assert_eq!(fs::read_to_string(&knob).unwrap(), "5\n");
    assert!(j.entries().is_empty());
    drop(j);
    assert!(!jp.exists());
}

#[test]
fn journal_from_another_boot_is_not_applied() {
    let d = tempfile::tempdir().unwrap();
    let proc = fake_proc(d.path(), "boot-b");
    let knob = d.path().join("knob");
    fs::write(&knob, "new\n").unwrap();
    let jp = d.path().join("journal.json");
    let data = JournalData {
        version: VERSION,
        boot_id: "boot-a".into(),
        owner_pid: 1,
        held: false,
        created_unix: 0,
        entries: vec![Entry {
            knob: Knob::File {
                path: knob.clone(),
                what: "x".into(),
            },
            original: "old".into(),
        }],
        unrestorable: Vec::new(),
    };
    write(&jp, &data).unwrap();
    let e = Journal::begin(&jp, &proc).unwrap_err();
    assert!(matches!(e, JournalError::Stale { count: 1, .. }), "{e}");
    assert!(e.to_string().contains("another boot"));
    assert_eq!(fs::read_to_string(&knob).unwrap(), "new\n");
    assert!(jp.exists());
}

#[test]
fn held_changes_are_adopted_and_restored_with_ours() {
    let d = tempfile::tempdir().unwrap();
    let proc = fake_proc(d.path(), "boot-a");
    let a = d.path().join("a");
    let b = d.path().join("b");
    fs::write(&a, "a0\n").unwrap();
    fs::write(&b, "b0\n").unwrap();
    let jp = d.path().join("journal.json");
    let (mut j, _) = Journal::begin(&jp, &proc).unwrap();
    j.set_file(&a, "a", "a1").unwrap();
    assert_eq!(j.hold().unwrap(), 1);
    assert_eq!(fs::read_to_string(&a).unwrap(), "a1\n");
    let (mut j, rec) = Journal::begin(&jp, &proc).unwrap();
    assert!(matches!(rec, Recovered::Adopted(1)));
    j.set_file(&b, "b", "b1").unwrap();
    let rep = j.restore().unwrap();
    assert_eq!(rep.restored.len(), 2);
    assert_eq!(fs::read_to_string(&a).unwrap(), "a0\n");
    assert_eq!(fs::read_to_string(&b).unwrap(), "b0\n");
}

#[test]
fn an_unrestorable_change_is_reported_once_and_can_be_discarded() {
    let d = tempfile::tempdir().unwrap();
    let proc = fake_proc(d.path(), "boot-a");
    // A knob that cannot be written back (its directory is gone).
    let gone = d.path().join("gone/smp_affinity_list");
    let ok = d.path().join("ok");
    fs::write(&ok, "a\n").unwrap();
    let jp = d.path().join("journal.json");
    let data = JournalData {
        version: VERSION,
        boot_id: "boot-a".into(),
        owner_pid: 999_999,
        held: false,
        created_unix: 0,
        entries: vec![Entry {
            knob: Knob::File {
                path: gone.clone(),
                what: "affinity of IRQ 9".into(),
            },
            original: "1".into(),
        }],
        unrestorable: Vec::new(),
    };
    write(&jp, &data).unwrap();
    // The next session reports the failure once...
    let (mut j, rec) = Journal::begin(&jp, &proc).unwrap();
    match rec {
        Recovered::Crash(rep) => assert_eq!(rep.failed.len(), 1),
        other => panic!("expected a crash recovery, got {other:?}"),
    }
    j.set_file(&ok, "ok", "b").unwrap();
    let rep = j.restore().unwrap();
    assert_eq!((rep.restored.len(), rep.failed.len()), (1, 0));
    assert_eq!(fs::read_to_string(&ok).unwrap(), "a\n");
    // ...and later sessions neither retry nor fail on it.
    for _ in 0..2 {
        let (j, rec) = Journal::begin(&jp, &proc).unwrap();
        assert!(matches!(rec, Recovered::Adopted(0)), "{rec:?}");
        let rep = j.restore().unwrap();
        assert!(rep.is_complete());
    }
    let on_disk: JournalData = serde_json::from_slice(&fs::read(&jp).unwrap()).unwrap();
    assert_eq!(on_disk.unrestorable.len(), 1);
    assert!(on_disk.entries.is_empty());
    // `restore` retries and keeps it; `restore --discard` drops it.
    let rep = restore_all(&jp, &proc, &on_disk, false).unwrap();
    assert_eq!(rep.failed.len(), 1);
    assert!(jp.exists());
    let rep = restore_all(&jp, &proc, &on_disk, true).unwrap();
    assert_eq!(rep.failed.len(), 1);
    assert!(!jp.exists());
}

#[test]
fn a_refused_thread_affinity_leaves_no_entry() {
    let d = tempfile::tempdir().unwrap();
    let jp = d.path().join("journal.json");
    let (mut j, _) = Journal::begin(&jp, Path::new("/proc")).unwrap();
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() } as u32;
    // CPU 100000 does not exist: the kernel refuses the mask (EINVAL).
    let e = j
        .set_thread_affinity(std::process::id(), tid, &[100_000])
        .unwrap_err();
    assert!(matches!(e, JournalError::Affinity { .. }), "{e}");
    assert!(j.entries().is_empty());
}

#[test]
fn a_killed_writers_temp_file_is_removed_at_the_next_start() {
    let d = tempfile::tempdir().unwrap();
    let proc = fake_proc(d.path(), "boot-a");
    let jp = d.path().join("journal.json");
    let stale = d.path().join(".journal.json.tmp.AbC123");
    fs::write(&stale, "{").unwrap();
    let other = d.path().join(".other.json.tmp.x");
    fs::write(&other, "keep").unwrap();
    let (_j, _) = Journal::begin(&jp, &proc).unwrap();
    assert!(!stale.exists());
    assert!(other.exists());
}

#[test]
fn second_live_session_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let proc = fake_proc(d.path(), "boot-a");
    let jp = d.path().join("journal.json");
    let (_j, _) = Journal::begin(&jp, &proc).unwrap();
    let e = Journal::begin(&jp, &proc).unwrap_err();
    assert!(matches!(e, JournalError::Busy { .. }), "{e}");
}
