//! Builders of the non-scheduler packets: clock snapshot, system info,
//! process / thread / request track descriptors, slices and instants. Pure.

use perfetto_protos::{
    builtin_clock::BuiltinClock,
    clock_snapshot::{clock_snapshot::Clock, ClockSnapshot},
    debug_annotation::DebugAnnotation,
    process_descriptor::ProcessDescriptor,
    system_info::Utsname,
    thread_descriptor::ThreadDescriptor,
    trace_packet::TracePacket,
    track_descriptor::TrackDescriptor,
    track_event::{track_event::Type, TrackEvent},
};

/// The packet sequence of everything tailprobe writes besides ftrace data.
pub const SEQUENCE_ID: u32 = 1;
/// `TracePacket.sequence_flags`: SEQ_INCREMENTAL_STATE_CLEARED.
const SEQ_INCREMENTAL_STATE_CLEARED: u32 = 1;

/// Track uuids: the kind in the top bits, the id below.
pub fn process_uuid(pid: u32) -> u64 {
    (1 << 56) | u64::from(pid)
}
pub fn thread_uuid(tid: u32) -> u64 {
    (2 << 56) | u64::from(tid)
}
pub fn request_uuid(id: u64) -> u64 {
    (3 << 56) | (id & ((1 << 56) - 1))
}
pub const NOTES_UUID: u64 = 4 << 56;

/// A value of a debug annotation (the arguments shown beside a slice).
#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    U(u64),
    S(String),
}

fn annotation(name: &str, v: &Arg) -> DebugAnnotation {
    let mut a = DebugAnnotation::new();
    a.set_name(name.to_string());
    match v {
        Arg::U(u) => a.set_uint_value(*u),
        Arg::S(s) => a.set_string_value(s.clone()),
    }
    a
}

fn on_sequence(mut p: TracePacket) -> TracePacket {
    p.set_trusted_packet_sequence_id(SEQUENCE_ID);
    p
}

/// The first packet of our sequence: clocks, so the trace processor can
/// relate CLOCK_MONOTONIC (our stamps) to CLOCK_BOOTTIME (the trace's).
pub fn clock_snapshot(boot_ns: u64, mono_ns: u64) -> TracePacket {
    let mut cs = ClockSnapshot::new();
    for (id, ts) in [
        (BuiltinClock::BUILTIN_CLOCK_BOOTTIME, boot_ns),
        (BuiltinClock::BUILTIN_CLOCK_MONOTONIC, mono_ns),
    ] {
        let mut c = Clock::new();
        c.set_clock_id(id as u32);
        c.set_timestamp(ts);
        cs.clocks.push(c);
    }
    cs.set_primary_trace_clock(BuiltinClock::BUILTIN_CLOCK_BOOTTIME);
    let mut p = TracePacket::new();
    p.set_timestamp(boot_ns);
    p.set_clock_snapshot(cs);
    p.set_sequence_flags(SEQ_INCREMENTAL_STATE_CLEARED);
    p.set_first_packet_on_sequence(true);
    on_sequence(p)
}

/// The kernel's uname (the trace processor decodes switch states by the
/// kernel version).
pub fn system_info(sysname: &str, release: &str, version: &str, machine: &str) -> TracePacket {
    let mut u = Utsname::new();
    u.set_sysname(sysname.to_string());
    u.set_release(release.to_string());
    u.set_version(version.to_string());
    u.set_machine(machine.to_string());
    let mut p = TracePacket::new();
    p.mut_system_info().utsname = Some(u).into();
    on_sequence(p)
}

pub fn process_track(pid: u32, name: &str, cmdline: Vec<String>) -> TracePacket {
    let mut pd = ProcessDescriptor::new();
    pd.set_pid(pid as i32);
    pd.set_process_name(name.to_string());
    pd.cmdline = cmdline;
    let mut td = TrackDescriptor::new();
    td.set_uuid(process_uuid(pid));
    td.process = Some(pd).into();
    let mut p = TracePacket::new();
    p.set_track_descriptor(td);
    on_sequence(p)
}

pub fn thread_track(pid: u32, tid: u32, name: &str) -> TracePacket {
    let mut t = ThreadDescriptor::new();
    t.set_pid(pid as i32);
    t.set_tid(tid as i32);
    t.set_thread_name(name.to_string());
    let mut td = TrackDescriptor::new();
    td.set_uuid(thread_uuid(tid));
    td.set_parent_uuid(process_uuid(pid));
    td.thread = Some(t).into();
    let mut p = TracePacket::new();
    p.set_track_descriptor(td);
    on_sequence(p)
}

/// A named track of its own under `parent` (one per request; the notes).
pub fn named_track(uuid: u64, parent: Option<u64>, name: &str) -> TracePacket {
    let mut td = TrackDescriptor::new();
    td.set_uuid(uuid);
    if let Some(p) = parent {
        td.set_parent_uuid(p);
    }
    td.set_name(name.to_string());
    let mut p = TracePacket::new();
    p.set_track_descriptor(td);
    on_sequence(p)
}

/// What one track event says.
#[derive(Debug, Clone, Default)]
pub struct Ev<'a> {
    pub track: u64,
    pub ts: u64,
    pub name: &'a str,
    pub args: Vec<(&'a str, Arg)>,
    pub flows: Vec<u64>,
    pub terminating_flows: Vec<u64>,
}

fn track_event(t: Type, e: &Ev<'_>) -> TracePacket {
    let mut te = TrackEvent::new();
    te.set_type(t);
    te.set_track_uuid(e.track);
    if t != Type::TYPE_SLICE_END {
        te.set_name(e.name.to_string());
    }
    te.debug_annotations = e.args.iter().map(|(n, v)| annotation(n, v)).collect();
    te.flow_ids = e.flows.clone();
    te.terminating_flow_ids = e.terminating_flows.clone();
    let mut p = TracePacket::new();
    p.set_timestamp(e.ts);
    p.set_track_event(te);
    on_sequence(p)
}

pub fn slice_begin(e: &Ev<'_>) -> TracePacket {
    track_event(Type::TYPE_SLICE_BEGIN, e)
}

pub fn slice_end(track: u64, ts: u64) -> TracePacket {
    track_event(
        Type::TYPE_SLICE_END,
        &Ev {
            track,
            ts,
            ..Ev::default()
        },
    )
}

pub fn instant(e: &Ev<'_>) -> TracePacket {
    track_event(Type::TYPE_INSTANT, e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_of_different_kinds_never_collide() {
        assert_ne!(process_uuid(7), thread_uuid(7));
        assert_ne!(thread_uuid(7), request_uuid(7));
        assert_ne!(request_uuid(0), NOTES_UUID);
    }

    #[test]
    fn a_slice_carries_its_name_args_and_flows() {
        let p = slice_begin(&Ev {
            track: 5,
            ts: 10,
            name: "request 1",
            args: vec![("status", Arg::U(200)), ("outcome", Arg::S("ok".into()))],
            flows: vec![9],
            terminating_flows: vec![],
        });
        assert_eq!(p.timestamp(), 10);
        assert_eq!(p.trusted_packet_sequence_id(), SEQUENCE_ID);
        let te = p.track_event();
        assert_eq!(te.type_(), Type::TYPE_SLICE_BEGIN);
        assert_eq!(te.name(), "request 1");
        assert_eq!(te.track_uuid(), 5);
        assert_eq!(te.flow_ids, vec![9]);
        assert_eq!(te.debug_annotations[0].uint_value(), 200);
        assert_eq!(te.debug_annotations[1].string_value(), "ok");
        let e = slice_end(5, 20);
        assert_eq!(e.track_event().type_(), Type::TYPE_SLICE_END);
        assert!(!e.track_event().has_name());
    }

    #[test]
    fn the_clock_snapshot_has_both_clocks() {
        let p = clock_snapshot(1_500, 1_000);
        let c = p.clock_snapshot();
        assert_eq!(c.clocks.len(), 2);
        assert_eq!(c.clocks[0].clock_id(), 6);
        assert_eq!(c.clocks[0].timestamp(), 1_500);
        assert_eq!(c.clocks[1].clock_id(), 3);
        assert_eq!(c.clocks[1].timestamp(), 1_000);
    }
}
