#!/usr/bin/env python3
"""Per-kernel times of cuda_bench's decode steps from an Nsight Compute CSV.

    ncu_steps.py NCU_CSV CONTEXTS VARIANTS STEPS

NCU_CSV: the output of `ncu --csv --metrics gpu__time_duration.sum,
dram__bytes_read.sum` over `cuda_bench` (other lines are skipped). The bench
runs, for each variant and then each context, 3 warm-up steps and STEPS timed
ones; a step ends with the two linear kernels after the split combine. Prints, per
variant and context, each kernel of a step: the median time (us) over the
steps, the DRAM bytes it read (MB) and that rate (TB/s), and the step's sum.
"""
import csv
import statistics
import sys

# Untimed steps cuda_bench runs before the timed ones at each context.
WARMUP = 3


def main():
    path, contexts, variants, steps = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    contexts = [c for c in contexts.split(",") if c]
    variants = [v for v in variants.split(",") if v]
    kernels = {}  # launch id -> {name, metric: value}
    with open(path, newline="") as f:
        for row in csv.reader(f):
            if len(row) < 15 or not row[0].isdigit():
                continue
            k = kernels.setdefault(int(row[0]), {"name": row[4]})
            try:
                k[row[12]] = float(row[14].replace(",", ""))
            except ValueError:
                pass
    seq = [kernels[i] for i in sorted(kernels)]
    # Steps: each ends with the two linear kernels after the split combine
    # (W_UV, then o_proj).
    step_list, cur, after = [], [], -1
    for k in seq:
        cur.append(k)
        if k["name"].startswith("mla_attn_combine"):
            after = 0
        elif after >= 0 and k["name"].startswith("mla_linear"):
            after += 1
            if after == 2:
                step_list.append(cur)
                cur, after = [], -1
    if cur:
        step_list.append(cur)
    per = WARMUP + steps
    want = len(contexts) * len(variants) * per
    if len(step_list) != want:
        print(f"ncu_steps: {len(step_list)} steps found, expected {want} "
              f"({len(variants)} variants x {len(contexts)} contexts x {per}); no table")
        return 1
    g = 0
    for v in variants:
        for c in contexts:
            group = step_list[g * per:(g + 1) * per][WARMUP:]
            g += 1
            shape = [k["name"] for k in group[0]]
            if any([k["name"] for k in s] != shape for s in group):
                print(f"{v} context {c}: the steps launch different kernels; no table")
                continue
            print(f"{v}, context {c} (median of {len(group)} steps):")
            total = 0.0
            for i, name in enumerate(shape):
                t = statistics.median(s[i].get("gpu__time_duration.sum", 0.0) for s in group) / 1e3
                b = statistics.median(s[i].get("dram__bytes_read.sum", 0.0) for s in group) / 1e6
                total += t
                rate = b / t if t > 0 else 0.0
                print(f"  {i + 1}. {name:28s} {t:8.1f} us {b:8.2f} MB {rate:6.2f} TB/s")
            print(f"  sum {total:8.1f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
