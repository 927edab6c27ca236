#!/usr/bin/env python3
"""Plots mla-rt's decode time against context length from the bench's JSON lines.

    cargo run --release --example bench -- --json bench-out/bench.jsonl
    python3 tools/bench/plot.py bench-out/bench.jsonl bench-out/decode.png

One row per config. Left: ms per decode step (per layer) against the context
length, log-log; colour = weight/cache dtypes, solid = cold, dashed = hot,
circle = 1 thread, square = more. Right: the same steps as a multiple of the
compute-aware limit, weights / BW + max(cache / BW, attention FLOPs / FMA peak),
with the probes' best bandwidth and FMA peak of the same run (older files
without `x_limit`: the bytes-only roofline); 1 is the limit.
Needs matplotlib (pip install matplotlib).
"""

import json
import sys
from collections import defaultdict


def main():
    if len(sys.argv) != 3:
        print(__doc__)
        return 2
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
    machine = next((r for r in rows if r.get("kind") == "machine"), {})
    series = defaultdict(list)
    for r in rows:
        if r.get("kind") != "decode":
            continue
        key = (r["config"], r["weights"], r["cache"], r["mode"], r["threads"])
        series[key].append(r)
    if not series:
        print("no decode rows in", sys.argv[1])
        return 1
    configs = sorted({k[0] for k in series})
    fig, axes = plt.subplots(len(configs), 2, figsize=(13, 4.8 * len(configs)), squeeze=False)
    colors = {}
    palette = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown"]
    for row, cfg in zip(axes, configs):
        ax, ax2 = row
        for key, pts in sorted(series.items()):
            if key[0] != cfg:
                continue
            pts.sort(key=lambda r: r["ctx"])
            x = [max(r["ctx"], 1) for r in pts]
            dts = (key[1], key[2])
            color = colors.setdefault(dts, palette[len(colors) % len(palette)])
            style = "-" if key[3] == "cold" else "--"
            marker = "o" if key[4] == 1 else "s"
            label = "w:{} c:{} {} {}t".format(key[1], key[2], key[3], key[4])
            kw = dict(color=color, linestyle=style, marker=marker, ms=4, label=label)
            ax.plot(x, [r["ms"] for r in pts], **kw)
            ratio = "x_limit" if any(r.get("x_limit") is not None for r in pts) else "x_roofline"
            ax2.plot(x, [r[ratio] if r.get(ratio) is not None else float("nan") for r in pts], **kw)
        ax.set_title(f"{cfg}: ms per decode step (one layer)", fontsize=10)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("context length (tokens in the cache)")
        ax.set_ylabel("ms per step")
        ax.grid(True, which="both", alpha=0.3)
        ax2.set_title(f"{cfg}: step time / compute-aware limit (1 = limit)", fontsize=10)
        ax2.set_xscale("log", base=2)
        ax2.axhline(1.0, color="k", lw=0.8)
        ax2.set_xlabel("context length")
        ax2.set_ylabel("x limit (ours / limit)")
        ax2.grid(True, which="both", alpha=0.3)
        ax2.legend(fontsize=7, loc="upper left", ncol=2)
    fig.suptitle("mla-rt decode: {} ({} CPUs, kernels {})".format(
        machine.get("model", "?"), machine.get("cpus", "?"), machine.get("isa", "?")), fontsize=10)
    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=110)
    print("wrote", sys.argv[2])
    return 0


if __name__ == "__main__":
    sys.exit(main())
