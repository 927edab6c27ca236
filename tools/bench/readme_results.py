#!/usr/bin/env python3
"""Writes the README's performance results from the JSON lines the benchmarks print.

    cargo run --release --example bench -- --config v2lite --layers cold \\
        --json bench-out/bench.jsonl
    python3 tools/bench/llama_peer.py --json bench-out/llama-peer.jsonl
    python3 tools/bench/plot.py bench-out/bench.jsonl docs/perf-decode.png
    python3 tools/bench/readme_results.py bench-out/bench.jsonl bench-out/llama-peer.jsonl

The block between the lines `<!-- bench-results -->` and `<!-- /bench-results -->`
in README.md is replaced by tables made only from those files: the machine and its probes, decode per
context length beside the compute-aware limit, prefill against the FMA peak, and
llama.cpp beside mla-rt (one table per llama.cpp file: a one-layer GGUF, whose
weights may stay in the last-level cache, and one of enough layers that they do
not). No figure is typed by hand. `--print` writes the block to stdout instead.
The llama.cpp files are optional.
"""
import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MARK, END = "<!-- bench-results -->", "<!-- /bench-results -->"


def load(path):
    return [json.loads(l) for l in open(path) if l.strip()]


def f(x, nd=2):
    return "-" if x is None else f"{x:.{nd}f}"


ORDER = {"f32": 0, "bf16": 1, "f16": 2, "f8_e4m3": 3}


def block(bench, peers):
    out = []
    machine = next((r for r in bench if r.get("kind") == "machine"), {})
    probes = [r for r in bench if r.get("kind") == "probe"]
    out.append(f"Machine: {machine.get('model', '?')}, {machine.get('cpus', '?')} logical CPUs, "
               f"caches {machine.get('caches', '?')}, kernels {machine.get('isa', '?')}, "
               f"load average {machine.get('loadavg', '?')} at the start; mla-rt "
               f"{machine.get('version', '?')}. Probes of the same run (best walk; median, best):")
    out.append("")
    out.append("| threads | read GB/s | best | FMA GFLOP/s | best |")
    out.append("|--:|--:|--:|--:|--:|")
    best = {}
    for p in probes:
        t = p["threads"]
        if t not in best or p["read_gbps_best"] > best[t]["read_gbps_best"]:
            best[t] = p
    for t in sorted(best):
        p = best[t]
        out.append(f"| {t} | {f(p['read_gbps'])} | {f(p['read_gbps_best'])} | "
                   f"{f(p['fma_gflops'], 1)} | {f(p['fma_gflops_best'], 1)} |")
    out.append("")

    dec = [r for r in bench if r.get("kind") == "decode"]
    if dec:
        ctxs = sorted({r["ctx"] for r in dec})
        out.append("Decode: ms per step per layer (median of the repetitions) and, in brackets, "
                   "ours / the compute-aware limit `weights / BW + max(cache / BW, attention FLOPs "
                   "/ FMA peak)` (1 is the limit; the bytes-only roofline ratio is in the JSON):")
        out.append("")
        out.append("| config | weights | cache | layers | threads | "
                   + " | ".join(f"context {c}" for c in ctxs) + " |")
        out.append("|---|---|---|---|--:|" + "--:|" * len(ctxs))
        groups = {}
        for r in dec:
            groups.setdefault((r["config"], r["weights"], r["cache"], r["mode"], r["threads"]), {})[r["ctx"]] = r
        for key in sorted(groups, key=lambda k: (k[0], ORDER.get(k[1], 9), ORDER.get(k[2], 9), k[3], k[4])):
            cells = []
            for c in ctxs:
                r = groups[key].get(c)
                cells.append("-" if r is None else f"{f(r['ms'], 3)} ({f(r.get('x_limit'))}x)")
            out.append(f"| {key[0]} | {key[1]} | {key[2]} | {key[3]} | {key[4]} | " + " | ".join(cells) + " |")
        out.append("")

    pre = [r for r in bench if r.get("kind") == "prefill"]
    if pre:
        out.append("Prefill from an empty cache (useful FLOPs / the FMA peak of the same thread count):")
        out.append("")
        out.append("| config | weights | cache | threads | tokens | ms | tokens/s | GFLOP/s | % of peak |")
        out.append("|---|---|---|--:|--:|--:|--:|--:|--:|")
        for r in sorted(pre, key=lambda r: (r["config"], ORDER.get(r["weights"], 9), ORDER.get(r["cache"], 9), r["threads"])):
            frac = r.get("peak_frac")
            out.append(f"| {r['config']} | {r['weights']} | {r['cache']} | {r['threads']} | {r['tokens']} | "
                       f"{f(r['ms'], 1)} | {f(r['tok_s'], 0)} | {f(r['gflops'], 1)} | "
                       f"{'-' if frac is None else f'{100 * frac:.0f}%'} |")
        out.append("")

    for one in peers:
        rows = [r for r in one if r.get("kind") == "llama_peer"]
        info = next((r for r in one if r.get("kind") == "llama_info"), {})
        if rows:
            layers = rows[0].get("layers", 1)
            whole = ("its whole token (its GGUF has one layer)" if layers == 1
                     else f"its whole token divided by the {layers} layers of its GGUF")
            modes = sorted({k[5:-3] for r in rows for k in r if k.startswith("ours_") and k.endswith("_ms")
                            and not k.endswith("_min_ms")})
            out.append(f"llama.cpp (commit {info.get('commit', '?')}, CPU build, absorbed MLA with a "
                       f"latent-only cache, flash attention) beside mla-rt, same run, ms per token per "
                       f"layer (median); ratio = llama.cpp / mla-rt (> 1: mla-rt faster). llama.cpp's "
                       f"time is {whole}: it also "
                       f"includes a tiny FFN per layer, the output norm and head (vocabulary 32) and its "
                       f"graph scheduling; load average {f(info.get('loadavg_start'))} at the start, "
                       f"{f(info.get('loadavg_end'))} at the end.")
            out.append("")
            hdr = "| context | threads | weights | llama.cpp cache | llama.cpp ms | mla-rt cache |"
            sep = "|--:|--:|---|---|--:|---|"
            for m in modes:
                hdr += f" mla-rt {m} ms | ratio ({m}) |"
                sep += "--:|--:|"
            out.append(hdr)
            out.append(sep)
            for r in rows:
                line = (f"| {r['ctx']} | {r['threads']} | {r['weights']} | {r['cache']} | "
                        f"{f(r['llama_ms'], 3)} | {r['ours_cache']} |")
                for m in modes:
                    line += f" {f(r.get(f'ours_{m}_ms'), 3)} | {f(r.get(f'ratio_{m}'))} |"
                out.append(line)
            out.append("")
    return "\n".join(out) + "\n"


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    if not args:
        print(__doc__)
        return 2
    bench = load(args[0])
    text = block(bench, [load(p) for p in args[1:]])
    if "--print" in sys.argv:
        sys.stdout.write(text)
        return 0
    path = os.path.join(ROOT, "README.md")
    readme = open(path, encoding="utf-8").read()
    pat = re.compile(re.escape(MARK) + r"\n.*?^" + re.escape(END) + "$", re.S | re.M)
    if not pat.search(readme):
        sys.exit(f"README.md has no '{MARK}' ... '{END}' block")
    readme = pat.sub(lambda _: MARK + "\n\n" + text + "\n" + END, readme, count=1)
    open(path, "w", encoding="utf-8").write(readme)
    print("README.md: bench results written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
