#!/usr/bin/env python3
"""Which kernel code bytes flip when a static key is turned on.

Run as root inside a vm-test guest (docs/vm-test.md, "The 6.12 Oops"):
reads SYMBOL+OFFSET..+LEN from /proc/kcore before, while and after a perf
event is open (a software page-fault counter, or a tracepoint), which turns
the kernel's static key for that event on and then off again: the bytes that
differ are the jump-label site the kernel patches live (text_poke_bp).

usage: static_key_check.py SYMBOL OFFSET LEN (page-faults | TRACEPOINT_CATEGORY/NAME)
       static_key_check.py stress SECONDS
The second form flips the page-fault counter's key on and off on CPU 0 as
fast as it can while a child process on CPU 1 takes page faults through the
site being patched, for SECONDS; it prints how many flips and faults ran.
Under multi-threaded TCG the guest kernel dies with the Oops (int3 at
do_user_addr_fault+0xcf) within seconds; see docs/vm-test.md.
"""
import ctypes
import struct
import sys


def symbol(name):
    with open("/proc/kallsyms") as f:
        for line in f:
            addr, _, sym = line.split()[:3]
            if sym == name:
                return int(addr, 16)
    sys.exit(f"{name} not in /proc/kallsyms")


def read_kernel(addr, n):
    with open("/proc/kcore", "rb") as f:
        hdr = f.read(64)
        phoff, = struct.unpack_from("<Q", hdr, 32)
        phentsize, phnum = struct.unpack_from("<HH", hdr, 54)
        for i in range(phnum):
            f.seek(phoff + i * phentsize)
            p_type, _flags, off, vaddr, _pa, filesz = struct.unpack("<IIQQQQ", f.read(40))
            if p_type == 1 and vaddr <= addr < vaddr + filesz:
                f.seek(off + addr - vaddr)
                return f.read(n)
    sys.exit(f"{addr:#x} not in /proc/kcore")


def perf_open(event):
    attr = bytearray(128)
    if event == "page-faults":
        typ, config, pid, cpu = 1, 2, 0, -1  # PERF_TYPE_SOFTWARE, PERF_COUNT_SW_PAGE_FAULTS
    else:
        with open(f"/sys/kernel/tracing/events/{event}/id") as f:
            typ, config, pid, cpu = 2, int(f.read()), -1, 0  # PERF_TYPE_TRACEPOINT
    struct.pack_into("<IIQ", attr, 0, typ, len(attr), config)
    libc = ctypes.CDLL(None, use_errno=True)
    buf = ctypes.create_string_buffer(bytes(attr), len(attr))
    fd = libc.syscall(298, buf, pid, cpu, -1, 0)  # perf_event_open
    if fd < 0:
        sys.exit(f"perf_event_open({event}): errno {ctypes.get_errno()}")
    return fd


def stress(seconds):
    import mmap
    import os
    import time
    child = os.fork()
    if child == 0:
        os.sched_setaffinity(0, {1})
        faults = 0
        end = time.time() + seconds
        while time.time() < end:
            m = mmap.mmap(-1, 64 * 4096)
            for i in range(0, 64 * 4096, 4096):
                m[i] = 1
            m.close()
            faults += 64
        print(f"  child on CPU 1: {faults} page faults", flush=True)
        os._exit(0)
    os.sched_setaffinity(0, {0})
    flips = 0
    end = time.time() + seconds
    while time.time() < end:
        os.close(perf_open("page-faults"))
        flips += 1
    os.waitpid(child, 0)
    print(f"stress: {flips} key flips on CPU 0 in {seconds} s, no Oops", flush=True)


def main():
    if sys.argv[1] == "stress":
        stress(float(sys.argv[2]))
        return
    name, off, n, event = sys.argv[1], int(sys.argv[2], 0), int(sys.argv[3], 0), sys.argv[4]
    addr = symbol(name) + off
    before = read_kernel(addr, n)
    fd = perf_open(event)
    during = read_kernel(addr, n)
    import os
    os.close(fd)
    after = read_kernel(addr, n)
    print(f"{name}+{off:#x} ({event}):")
    for label, b in (("before", before), ("open  ", during), ("closed", after)):
        print(f"  {label} {b.hex(' ')}")
    changed = [i for i in range(n) if before[i] != during[i]]
    if changed:
        print(f"  bytes that flip: {name}+{off + changed[0]:#x} .. +{off + changed[-1]:#x}")
    else:
        print("  no byte flips")


main()
