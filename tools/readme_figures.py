#!/usr/bin/env python3
"""Writes the README's measured figures from the logs of a `tools/test.sh` run.

Every figure block in README.md follows a marker line `<!-- figure: NAME -->`;
this script replaces the block after each marker with what the logs in
`target/test-logs` (written by tools/test.sh) say, so that no figure is typed
by hand. Run it after `tools/test.sh`:

    python3 tools/readme_figures.py            # rewrite README.md in place
    python3 tools/readme_figures.py --check    # exit 1 if README.md would change

Figures it cannot find in the logs are left as they are, with a warning.
"""
import argparse
import os
import platform
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def indent(lines):
    return "".join("    " + l.rstrip() + "\n" for l in lines)


def golden(logs):
    t = read(os.path.join(logs, "golden.log")) or ""
    lines = [l for l in t.splitlines() if re.match(r"^[a-z0-9_]+: [0-9]+ tokens, 9 runs, worst rel err", l)]
    return indent(lines) if lines else None


def fp8(logs):
    t = read(os.path.join(logs, "fp8.log")) or ""
    lines = [l for l in t.splitlines() if l.startswith("| ")]
    return "".join(l.rstrip() + "\n" for l in lines) if lines else None


def c_checks(logs):
    t = read(os.path.join(logs, "ffi.log")) or ""
    m = re.search(r"^([0-9]+ checks, [0-9]+ failures[^\n]*)$", t, re.M)
    return m.group(1).strip() if m else None


def cross_demos(logs):
    t = read(os.path.join(logs, "cross.log")) or ""
    m = re.search(r"^x86-64:\n(.*?)^(?:note: aarch64[^\n]*\n|\s*\()", t, re.M | re.S)
    if not m:
        return None
    lines = ["x86-64:"] + m.group(1).splitlines()
    n = re.search(r"^note: aarch64[^\n]*$", t, re.M)
    if n:
        lines.append(n.group(0))
    return indent(lines)


def firmware(logs):
    t = read(os.path.join(logs, "cross.log")) or ""
    lines = re.findall(r"^  \| (.*)$", t, re.M)
    lines = [l for l in lines if not l.startswith("firmware-c")]
    # The Rust firmware's lines come first; stop at the C firmware's.
    out = []
    for l in lines:
        out.append(l)
        if l.startswith("mla-firmware: PASS"):
            break
    return indent(out) if out else None


def sizes(logs):
    t = read(os.path.join(logs, "cross.log")) or ""
    blocks = re.findall(r"^((?:\.[a-z_]+\s+[0-9]+\s+[0-9]+\n)+)", t, re.M)
    named = re.findall(r"^(firmware(?:-c)? \.text: [^\n]*)$", t, re.M)
    if not blocks:
        return None
    lines = []
    for i, b in enumerate(blocks[:2]):
        lines.append(["firmware (Rust):", "firmware-c (C):"][i])
        lines += b.rstrip("\n").splitlines()
    lines += named
    return indent(lines)


def glibc(_logs):
    exe = None
    for base in ("target/cross-ci/ffi-aarch64-unknown-linux-gnu",):
        p = os.path.join(ROOT, base, "demo_c_static")
        if os.path.exists(p):
            exe = p
    if exe is None:
        return None
    try:
        out = subprocess.run(["aarch64-linux-gnu-objdump", "-T", exe], capture_output=True, text=True).stdout
    except OSError:
        return None
    vers = sorted(set(re.findall(r"GLIBC_([0-9.]+)", out)), key=lambda v: [int(x) for x in v.split(".")])
    if not vers:
        return None
    return f"On the machine below it prints `GLIBC_{vers[-1]}` for `demo_c_static` as `.ci/cross.sh` builds it.\n"


def machine(_logs):
    cpu = ""
    for l in (read("/proc/cpuinfo") or "").splitlines():
        if l.startswith("model name"):
            cpu = l.split(":", 1)[1].strip()
            break
    mem = ""
    m = re.search(r"MemTotal:\s+([0-9]+) kB", read("/proc/meminfo") or "")
    if m:
        mem = f", {int(m.group(1)) / 2**20:.0f} GiB memory"
    osr = read("/etc/os-release") or ""
    d = re.search(r'^PRETTY_NAME="([^"]*)"', osr, re.M)
    return f"{cpu or platform.processor()}, {os.cpu_count()} logical CPUs{mem}, {d.group(1) if d else platform.system()}"


def test_time(logs):
    t = read(os.path.join(logs, "seconds"))
    if not t or not t.strip().isdigit():
        return None
    s = int(t.strip())
    return f"{s // 60} min {s % 60} s"


FIGURES = {
    "golden": golden,
    "fp8": fp8,
    "c-checks": c_checks,
    "cross-demos": cross_demos,
    "firmware-output": firmware,
    "firmware-sizes": sizes,
    "glibc": glibc,
}
INLINE = {"machine": machine, "test-time": test_time}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--logs", default=os.path.join(ROOT, "target", "test-logs"))
    ap.add_argument("--check", action="store_true")
    a = ap.parse_args()
    path = os.path.join(ROOT, "README.md")
    text = read(path)
    out, missing = [], []
    lines = text.splitlines(keepends=True)
    i = 0
    while i < len(lines):
        line = lines[i]
        m = re.match(r"^(.*)<!-- figure: ([a-z0-9-]+) -->(.*)$", line.rstrip("\n"))
        if not m:
            out.append(line)
            i += 1
            continue
        name = m.group(2)
        if name in INLINE or m.group(3):
            # Inline figure: `<!-- figure: NAME -->`value`` on the same line.
            fn = INLINE.get(name) or FIGURES.get(name)
            val = fn(a.logs) if fn else None
            if val is None:
                missing.append(name)
                out.append(line)
            else:
                rest = re.sub(r"^`[^`]*`", "`" + val.strip() + "`", m.group(3))
                out.append(f"{m.group(1)}<!-- figure: {name} -->{rest}\n")
            i += 1
            continue
        fn = FIGURES.get(name)
        val = fn(a.logs) if fn else None
        out.append(line)
        i += 1
        # The block: following non-blank lines (indented or a single line).
        j = i
        while j < len(lines) and lines[j].strip() and not lines[j].startswith("<!--"):
            j += 1
        if val is None:
            missing.append(name)
            out.extend(lines[i:j])
        else:
            out.append(val)
        i = j
    new = "".join(out)
    for n in missing:
        print(f"readme_figures: no value for figure '{n}' in {a.logs}", file=sys.stderr)
    if a.check:
        sys.exit(0 if new == text else 1)
    if new != text:
        with open(path, "w", encoding="utf-8") as f:
            f.write(new)
        print("README.md: figures updated")


if __name__ == "__main__":
    main()
