#!/usr/bin/env python3
"""Which C entry points reach the panic handler, and through what calls.

Usage: panic_paths.py <disassembly>   (output of `arm-none-eabi-objdump -d -C` of the
firmware linked with -Wl,--defsym=mla_panic_is_reachable=0, so that it links).

Builds the direct call graph (bl/b/cbz... to a symbol, i.e. calls and tail calls)
and prints, for every `mla_*` function from which the panic handler is reachable,
the shortest call chain down to it. Calls through function pointers (fmt vtables)
are not seen; the chains printed are real ones, not necessarily all of them.
Exit status 1 when some entry point reaches the handler, else 0.
"""
import re
import sys
from collections import deque

FUNC = re.compile(r"^([0-9a-f]+) <(.+)>:$")
BRANCH = re.compile(r"\t(?:bl|blx|b|b\.[nw]|b[a-z]{2}(?:\.[nw])?|cbn?z)\s+(?:r\d+, )?[0-9a-f]+ <(.+?)(?:\+0x[0-9a-f]+)?>")
SINK = re.compile(r"rust_begin_unwind|mla_panic_is_reachable")


def main():
    callers = {}
    cur = None
    with open(sys.argv[1]) as f:
        for line in f:
            m = FUNC.match(line)
            if m:
                cur = m.group(2)
                continue
            m = BRANCH.search(line)
            if m and cur and m.group(1) != cur:
                callers.setdefault(m.group(1), set()).add(cur)
    sinks = [n for n in set(callers) if SINK.search(n)]
    # Backward BFS from the sinks: nxt[f] = the callee one step closer to a sink.
    nxt = {s: None for s in sinks}
    q = deque(sinks)
    while q:
        f = q.popleft()
        for c in sorted(callers.get(f, ())):
            if c not in nxt:
                nxt[c] = f
                q.append(c)
    entries = sorted(
        n for n in nxt if re.fullmatch(r"mla_[a-z0-9_]+", n) and not SINK.search(n)
    )
    for e in entries:
        chain, f = [], e
        while f is not None:
            chain.append(f)
            f = nxt[f]
        print(f"{e} reaches the panic handler:")
        for depth, fn in enumerate(chain[1:], 1):
            print("  " * depth + "-> " + fn)
    if not entries:
        print("no mla_* entry point reaches the panic handler")
    return 1 if entries else 0


if __name__ == "__main__":
    sys.exit(main())
