#!/usr/bin/env python3
"""Decode a Perfetto protobuf trace with the PyPI `perfetto` package's own
protobuf classes (independent of tailprobe's Rust decoder) and print counts
as one JSON object: packets by kind, compact sched switches and wakings,
ftrace IRQ/softirq events, track events by type, request tracks, flows, and
each request slice's duration in ns by track name."""

import json
import sys
from collections import Counter

from perfetto.protos.perfetto.trace.perfetto_trace_pb2 import Trace, TrackEvent


def main(path):
    trace = Trace()
    with open(path, "rb") as f:
        trace.ParseFromString(f.read())
    kinds = Counter()
    out = Counter()
    names = {}
    open_slices = {}
    request_ns = {}
    for p in trace.packet:
        kinds[p.WhichOneof("data") or "none"] += 1
        if p.HasField("ftrace_events"):
            cs = p.ftrace_events.compact_sched
            out["switches"] += len(cs.switch_timestamp)
            out["wakings"] += len(cs.waking_timestamp)
            for e in p.ftrace_events.event:
                out[e.WhichOneof("event")] += 1
        if p.HasField("track_descriptor"):
            d = p.track_descriptor
            if d.name.startswith("request "):
                out["request_tracks"] += 1
                names[d.uuid] = d.name
        if p.HasField("track_event"):
            te = p.track_event
            out[TrackEvent.Type.Name(te.type)] += 1
            out["flows"] += len(te.flow_ids)
            out["terminating_flows"] += len(te.terminating_flow_ids)
            stack = open_slices.setdefault(te.track_uuid, [])
            if te.type == TrackEvent.TYPE_SLICE_BEGIN:
                stack.append(p.timestamp)
            elif te.type == TrackEvent.TYPE_SLICE_END and stack:
                begin = stack.pop()
                if not stack and te.track_uuid in names:
                    request_ns[names[te.track_uuid]] = p.timestamp - begin
    print(json.dumps({"packets": kinds, "counts": out, "request_ns": request_ns}))


if __name__ == "__main__":
    main(sys.argv[1])
