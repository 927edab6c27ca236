#!/usr/bin/env python3
"""mla-rt beside llama.cpp: decode at DeepSeek-V2-Lite attention dims, same machine, same run.

llama.cpp is the usual way DeepSeek models run on a CPU. This script builds it, gives
it a one-layer `deepseek2` GGUF at V2-Lite attention dims with random weights, times
token generation with `llama-bench` at a given context depth, runs mla-rt's own bench
(examples/bench.rs) for the same points, and prints the two side by side with the
ratio (llama.cpp / mla-rt: above 1, mla-rt is faster).

The GGUF (written with the gguf-py that ships inside the same llama.cpp source):
- dims: hidden 2048, 16 heads, no query LoRA (attn_q), kv_lora_rank 512, nope 128,
  rope 64, v 128, rms eps 1e-6, rope theta 10000 with V2-Lite's YaRN (factor 40
  over 4096, mscale_all_dim 0.707);
- split for the absorbed path as llama.cpp's converter does it: attn_k_b
  {nope, kv_lora_rank, heads} and attn_v_b {kv_lora_rank, v, heads}, head_count_kv
  1, key/value_length 576/512 and key/value_length_mla 192/128, so llama.cpp keeps
  only the latent + rope key in its cache (no V cache);
- one dense layer (leading_dense_block_count = layers) with a tiny SwiGLU FFN
  (--ffn, default 16) and a tiny vocabulary (--vocab, default 32; tokenizer "none",
  dummy tokens): beyond attention, each llama.cpp token also pays an embedding row,
  two extra RMSNorms, the FFN, the output norm, the lm_head and the per-token graph
  and thread-pool overhead (see tools/bench/README.md);
- weights f32, f16 or bf16 (--weights); the norms stay f32 as the converter keeps them.

llama.cpp: `llama-bench -p 0 -n N -d CTX -fa 1 -ctk CACHE` (the cache filled by a real
prefill of CTX random tokens, then N tokens generated one at a time; the time per
token is the median repetition / N). mla-rt: `cargo run --release --example bench`
with --layers hot,cold (hot: one layer step after step, as llama.cpp runs this
one-layer model; cold: layers whose working set is twice the last-level cache).
Cache dtypes: --cache for llama.cpp (f16, its default, or bf16; llama-bench takes
no f32 cache), --ours-cache for mla-rt (default bf16,f16: the same two bytes per
element; f32 too); each llama.cpp row is printed beside each of mla-rt's caches.

Setup (idempotent, all outside the repo under $MLA_PEER_DIR, default
~/.cache/mla-rt-peer): the llama-cpp-python source package from PyPI (it vendors
llama.cpp), a CPU-only Release build of llama-bench (-DGGML_NATIVE=ON; about ten
minutes on two cores), a venv with that source's gguf-py and numpy, the GGUF files.

    python3 tools/bench/llama_peer.py                 # full: ctx 1024,4096,16384, threads 1,2, f32+bf16
    python3 tools/bench/llama_peer.py --quick         # ctx 4096, 1 thread, f32 weights (~2-3 min once built)
    python3 tools/bench/llama_peer.py --setup-only    # build and write the GGUFs, run nothing
    options: --ctx 1024,4096,16384 --threads 1,2 --weights f32,bf16 --cache f16
             --ours-cache bf16,f16 --n-gen 32 --reps 5 --layers 1 --ffn 16 --vocab 32
             --modes hot,cold --json bench-out/llama-peer.jsonl --peer-dir DIR --no-ours
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
HERE = os.path.abspath(__file__)

# ---------------------------------------------------------------------------
# mla-rt's bench: the one place to adapt if the example moves (e.g. into a
# workspace member: add "-p", "<crate>" after "run").
# ---------------------------------------------------------------------------
OURS_CMD = ["cargo", "run", "--release", "--quiet", "--example", "bench", "--"]
OURS_CWD = ROOT

# llama-cpp-python release whose vendored llama.cpp was checked with this script.
LLAMA_CPP_PYTHON = "0.3.36"

# DeepSeek-V2-Lite attention dims (the same as mla-rt's `v2lite` config).
D, H, R, NOPE, ROPE, V = 2048, 16, 512, 128, 64, 128
RMS_EPS, THETA = 1e-6, 10000.0
YARN_FACTOR, YARN_ORIG, YARN_MSCALE_ALL = 40.0, 4096, 0.707
GGUF_FORMAT = 1  # bump when the GGUF contents change, so cached files are rewritten


def log(*a):
    print(*a, flush=True)


def run(cmd, **kw):
    log("+ " + " ".join(cmd))
    return subprocess.run(cmd, check=True, **kw)


# ---------------------------------------------------------------------------
# Setup: source, build, venv
# ---------------------------------------------------------------------------

def make_venv(peer):
    """The venv that downloads the source package and writes the GGUFs."""
    venv = os.path.join(peer, "venv")
    py = os.path.join(venv, "bin", "python")
    if not os.path.isfile(py):
        r = subprocess.run([sys.executable, "-m", "venv", venv])
        if r.returncode != 0:
            sys.exit("llama_peer: python3 -m venv failed (Debian: apt-get install python3-venv)")
    return py


def llama_src(py, peer, version):
    """Download and unpack llama-cpp-python's source package; return vendor/llama.cpp."""
    src = os.path.join(peer, "src")
    top = os.path.join(src, f"llama_cpp_python-{version}")
    llama = os.path.join(top, "vendor", "llama.cpp")
    if os.path.isfile(os.path.join(llama, "CMakeLists.txt")):
        return top, llama
    os.makedirs(src, exist_ok=True)
    tgz = os.path.join(src, f"llama_cpp_python-{version}.tar.gz")
    if not os.path.isfile(tgz):
        # Only this package is built from source; its build dependencies (needed by pip
        # to read the metadata) come as wheels.
        run([py, "-m", "pip", "download", "--quiet", f"llama-cpp-python=={version}",
             "--no-binary", "llama-cpp-python", "--no-deps", "-d", src])
    with tarfile.open(tgz) as t:
        if hasattr(tarfile, "data_filter"):
            t.extractall(src, filter="data")
        else:
            t.extractall(src)
    return top, llama


def llama_commit(top):
    """The llama.cpp commit this release vendors, from its changelog."""
    try:
        text = open(os.path.join(top, "CHANGELOG.md")).read()
    except OSError:
        return "unknown"
    m = re.search(r"llama\.cpp@([0-9a-f]{7,40})", text)
    return m.group(1) if m else "unknown"


def build_llama_bench(peer, top, llama, jobs):
    build = os.path.join(peer, "build")
    exe = os.path.join(build, "bin", "llama-bench")
    stamp = os.path.join(build, "mla-peer-build.json")
    version = os.path.basename(top).split("-")[-1]
    if os.path.isfile(exe) and os.path.isfile(stamp):
        info = json.load(open(stamp))
        if info.get("llama_cpp_python") == version:
            return exe, info
        shutil.rmtree(build)  # another release: start the build over
    for tool in ("cmake", "cc", "c++"):
        if not shutil.which(tool):
            sys.exit(f"llama_peer: {tool} not found (Debian: apt-get install cmake gcc g++)")
    commit = llama_commit(top)
    t0 = time.time()
    run(["cmake", "-S", llama, "-B", build, "-DCMAKE_BUILD_TYPE=Release",
         "-DGGML_NATIVE=ON", "-DGGML_CUDA=OFF", "-DGGML_METAL=OFF", "-DGGML_VULKAN=OFF",
         "-DGGML_HIP=OFF", "-DGGML_SYCL=OFF", "-DGGML_OPENCL=OFF", "-DGGML_RPC=OFF",
         "-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF", "-DBUILD_SHARED_LIBS=OFF",
         "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_SERVER=OFF",
         f"-DLLAMA_BUILD_COMMIT={commit}"], stdout=subprocess.DEVNULL)
    log(f"building llama-bench with {jobs} jobs (about ten minutes on two cores) ...")
    run(["cmake", "--build", build, "--target", "llama-bench", "-j", str(jobs)],
        stdout=subprocess.DEVNULL)
    info = {"llama_cpp_python": version, "commit": commit,
            "build_s": round(time.time() - t0, 1)}
    json.dump(info, open(stamp, "w"))
    return exe, info


def install_gguf(py, llama):
    """The vendored gguf-py (same version as the llama.cpp being built) and numpy."""
    if subprocess.run([py, "-c", "import gguf, numpy"], stderr=subprocess.DEVNULL).returncode != 0:
        run([py, "-m", "pip", "install", "--quiet", os.path.join(llama, "gguf-py")])


# ---------------------------------------------------------------------------
# The GGUF (runs inside the venv: `llama_peer.py --write-gguf ...`)
# ---------------------------------------------------------------------------

def write_gguf(path, wdtype, n_layers, n_ff, n_vocab, seed):
    import numpy as np
    import gguf

    qtype = {"f32": gguf.GGMLQuantizationType.F32, "f16": gguf.GGMLQuantizationType.F16,
             "bf16": gguf.GGMLQuantizationType.BF16}[wdtype]
    ftype = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
             "bf16": gguf.LlamaFileType.MOSTLY_BF16}[wdtype]
    rng = np.random.default_rng(seed)
    tmp = path + ".tmp"
    w = gguf.GGUFWriter(tmp, "deepseek2")
    w.add_name("mla-rt peer: DeepSeek-V2-Lite attention dims, random weights")
    w.add_file_type(ftype)
    w.add_context_length(163840)
    w.add_embedding_length(D)
    w.add_block_count(n_layers)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(H)
    w.add_head_count_kv(1)                  # absorbed MLA runs as MQA over the latent
    w.add_rope_freq_base(THETA)
    w.add_layer_norm_rms_eps(RMS_EPS)
    w.add_vocab_size(n_vocab)
    w.add_leading_dense_block_count(n_layers)
    w.add_q_lora_rank(0)                    # required unless the layer count says "lite"
    w.add_kv_lora_rank(R)
    w.add_key_length(R + ROPE)              # cache row: latent + rope key
    w.add_value_length(R)
    w.add_key_length_mla(NOPE + ROPE)       # the per-head dims after decompression
    w.add_value_length_mla(V)
    w.add_expert_feed_forward_length(n_ff)  # read by the loader, unused by a dense layer
    w.add_expert_shared_count(0)
    w.add_rope_dimension_count(ROPE)
    w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
    w.add_rope_scaling_factor(YARN_FACTOR)
    w.add_rope_scaling_orig_ctx_len(YARN_ORIG)
    w.add_rope_scaling_yarn_log_mul(0.1 * YARN_MSCALE_ALL)  # the converter's convention
    w.add_tokenizer_model("none")           # n_vocab dummy tokens, no BOS

    def name(t, bid=None):
        return gguf.TENSOR_NAMES[t].format(bid=bid) + ".weight"

    def mat(nm, shape):
        # numpy shape is GGUF's ne reversed: the last axis is ne0, the input dim.
        x = rng.uniform(-1.0, 1.0, size=shape).astype(np.float32) * np.float32((3.0 / shape[-1]) ** 0.5)
        if qtype == gguf.GGMLQuantizationType.F32:
            w.add_tensor(nm, x)
        elif qtype == gguf.GGMLQuantizationType.F16:
            w.add_tensor(nm, x.astype(np.float16))
        else:
            w.add_tensor(nm, gguf.quants.quantize(x, qtype), raw_dtype=qtype)

    def norm(nm, n):
        w.add_tensor(nm, np.ones(n, dtype=np.float32))

    T = gguf.MODEL_TENSOR
    mat(name(T.TOKEN_EMBD), (n_vocab, D))
    norm(name(T.OUTPUT_NORM), D)
    mat(name(T.OUTPUT), (n_vocab, D))
    for b in range(n_layers):
        norm(name(T.ATTN_NORM, b), D)
        mat(name(T.ATTN_Q, b), (H * (NOPE + ROPE), D))
        mat(name(T.ATTN_KV_A_MQA, b), (R + ROPE, D))
        norm(name(T.ATTN_KV_A_NORM, b), R)
        mat(name(T.ATTN_K_B, b), (H, R, NOPE))      # ne {nope, r, H}: q_nope -> latent
        mat(name(T.ATTN_V_B, b), (H, V, R))         # ne {r, v, H}: latent -> v
        mat(name(T.ATTN_OUT, b), (D, H * V))
        norm(name(T.FFN_NORM, b), D)
        mat(name(T.FFN_GATE, b), (n_ff, D))
        mat(name(T.FFN_UP, b), (n_ff, D))
        mat(name(T.FFN_DOWN, b), (D, n_ff))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    os.replace(tmp, path)


def gguf_path(peer, wdtype, a):
    return os.path.join(peer, "models",
                        f"mla-v2lite-{a.layers}l-{wdtype}-ff{a.ffn}-v{a.vocab}-fmt{GGUF_FORMAT}.gguf")


def ensure_gguf(py, peer, wdtype, a):
    path = gguf_path(peer, wdtype, a)
    if not os.path.isfile(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        run([py, HERE, "--write-gguf", path, "--weights", wdtype, "--layers", str(a.layers),
             "--ffn", str(a.ffn), "--vocab", str(a.vocab)])
    return path


# ---------------------------------------------------------------------------
# llama.cpp runs
# ---------------------------------------------------------------------------

def median(v):
    v = sorted(v)
    n = len(v)
    return v[n // 2] if n % 2 else 0.5 * (v[n // 2 - 1] + v[n // 2])


def parse_llama_log(text):
    """What the loader and the cache say: proof of the MLA path and the cache bytes/token."""
    info = {}
    for key in ("arch", "n_layer", "n_head_kv", "n_embd_head_k", "n_embd_head_v", "n_lora_q",
                "n_lora_kv", "n_embd_head_k_mla", "n_embd_head_v_mla", "n_rot", "rope scaling",
                "file type", "n_vocab"):
        m = re.search(r"print_info: " + re.escape(key) + r"\s*= ([^\n]+)", text)
        if m:
            info[key] = m.group(1).strip()
    m = re.search(r"flash_attn\s*= (\w+)", text)
    if m:
        info["flash_attn"] = m.group(1)
    caches = re.findall(r"llama_kv_cache: size = +([\d.]+) MiB \( *(\d+) cells, +(\d+) layers.*?"
                        r"K \((\w+)\): +([\d.]+) MiB, V \((\w+)\): +([\d.]+) MiB", text)
    m = re.search(r"print_info: n_embd_k_gqa\s*= (\d+)", text)
    if caches:
        size, cells, layers, tk, kmib, tv, vmib = caches[-1]
        cells, layers = int(cells), int(layers)
        info["kv_cells"] = cells
        info["kv_type_k"] = tk
        info["kv_K_MiB"] = float(kmib)
        info["kv_V_MiB"] = float(vmib)
        # The log prints MiB to two decimals; the row is n_embd_k_gqa elements of type_k.
        esize = {"f32": 4, "f16": 2, "bf16": 2}.get(tk)
        if m and esize:
            row = int(m.group(1)) * esize
            info["kv_bytes_per_token_layer"] = row
            info["kv_log_agrees"] = abs(row * cells * layers / 2**20 - float(kmib)) < 0.006 and float(vmib) == 0.0
    return info


def llama_runs(exe, models, a, ctx, out_dir):
    """One llama-bench call per depth and cache type: all models and thread counts share
    the depth prefill (llama-bench restores the cached state between instances; the
    most threads first, since the first instance runs the prefill)."""
    rows, info = [], {}
    for cache in a.cache:
        cmd = [exe, "-m", ",".join(models[w] for w in a.weights), "-p", "0",
               "-n", str(a.n_gen), "-d", str(ctx), "-t", ",".join(map(str, sorted(a.threads, reverse=True))),
               "-fa", "1", "-ctk", cache, "-ctv", cache, "-r", str(a.reps),
               "-o", "jsonl", "-v"]
        logf = os.path.join(out_dir, f"llama-bench-d{ctx}-{cache}.log")
        t0 = time.time()
        log("+ " + " ".join(cmd) + f"  2> {os.path.relpath(logf, ROOT)}")
        with open(logf, "w") as err:
            p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=err, text=True)
        if p.returncode != 0:
            sys.exit(f"llama_peer: llama-bench failed (rc {p.returncode}); see {logf}")
        log(f"  ({time.time() - t0:.0f} s)")
        text = open(logf, errors="replace").read()
        info.setdefault(cache, parse_llama_log(text))
        by_path = {v: k for k, v in models.items()}
        for line in p.stdout.splitlines():
            line = line.strip()
            if not line.startswith("{"):
                continue
            r = json.loads(line)
            wd = by_path.get(r["model_filename"]) or next(
                (k for k, v in models.items() if os.path.basename(v) == os.path.basename(r["model_filename"])), "?")
            per_tok = [s / r["n_gen"] / 1e6 for s in r["samples_ns"]]
            rows.append({
                "kind": "llama", "ctx": r["n_depth"], "threads": r["n_threads"], "weights": wd,
                "cache": r["type_k"], "n_gen": r["n_gen"], "ms": median(per_tok),
                "ms_min": min(per_tok), "ms_mean": r["avg_ns"] / r["n_gen"] / 1e6,
                "build_commit": r["build_commit"], "build_number": r["build_number"],
                "cpu_info": r["cpu_info"], "backends": r["backends"],
                "model_size": r["model_size"], "model_n_params": r["model_n_params"],
                "flash_attn": r["flash_attn"],
            })
    return rows, info


# ---------------------------------------------------------------------------
# mla-rt runs
# ---------------------------------------------------------------------------

def ours_runs(a, ctx, out_dir):
    path = os.path.join(out_dir, "ours-for-llama-peer.jsonl")
    if os.path.exists(path):
        os.remove(path)
    cmd = OURS_CMD + ["--config", "v2lite", "--weights", ",".join(a.weights),
                      "--cache", ",".join(a.ours_cache), "--threads", ",".join(map(str, a.threads)),
                      "--ctx", str(ctx), "--layers", ",".join(a.modes),
                      "--prefill", "0", "--no-probe", "--json", path]
    if a.quick:
        cmd += ["--budget", "0.5"]
    t0 = time.time()
    run(cmd, cwd=OURS_CWD, stdout=subprocess.DEVNULL)
    log(f"  ({time.time() - t0:.0f} s)")
    rows = [json.loads(line) for line in open(path) if line.strip()]
    machine = next((r for r in rows if r.get("kind") == "machine"), {})
    dec = [r for r in rows if r.get("kind") == "decode"]
    return dec, machine


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------

def lst(s, f=str):
    return [f(x.strip()) for x in s.split(",") if x.strip()]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="ctx 4096, 1 thread, f32 weights, fewer tokens")
    ap.add_argument("--ctx", default="1024,4096,16384")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--weights", default="f32,bf16", help="f32,f16,bf16 (GGUF weights and mla-rt weights)")
    ap.add_argument("--cache", default="f16", help="llama.cpp cache dtypes: f16 (its default), bf16")
    ap.add_argument("--ours-cache", default="bf16,f16", help="mla-rt cache dtypes: bf16, f16, f32")
    ap.add_argument("--n-gen", type=int, default=32, help="tokens generated per llama-bench repetition")
    ap.add_argument("--reps", type=int, default=5, help="llama-bench repetitions")
    ap.add_argument("--layers", type=int, default=1, help="layers in the GGUF (times are divided by it)")
    ap.add_argument("--ffn", type=int, default=16, help="FFN intermediate size in the GGUF")
    ap.add_argument("--vocab", type=int, default=32, help="vocabulary size in the GGUF")
    ap.add_argument("--modes", default="hot,cold", help="mla-rt --layers modes")
    ap.add_argument("--json", default=os.path.join(ROOT, "bench-out", "llama-peer.jsonl"))
    ap.add_argument("--peer-dir", default=os.environ.get("MLA_PEER_DIR")
                    or os.path.join(os.path.expanduser("~"), ".cache", "mla-rt-peer"))
    ap.add_argument("--llama-cpp-python", default=LLAMA_CPP_PYTHON, help="source release to build")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 2, help="build jobs")
    ap.add_argument("--setup-only", action="store_true")
    ap.add_argument("--no-ours", action="store_true", help="llama.cpp only")
    ap.add_argument("--write-gguf", metavar="PATH", help=argparse.SUPPRESS)
    a = ap.parse_args()

    if a.write_gguf:
        write_gguf(a.write_gguf, a.weights, a.layers, a.ffn, a.vocab, seed=1234)
        return

    if a.quick:
        a.ctx, a.threads, a.weights = "4096", "1", "f32"
        a.n_gen, a.reps = 16, 3
    a.ctx, a.threads = lst(a.ctx, int), lst(a.threads, int)
    a.weights, a.cache, a.modes = lst(a.weights), lst(a.cache), lst(a.modes)
    a.ours_cache = lst(a.ours_cache)
    for wd in a.weights:
        if wd not in ("f32", "f16", "bf16"):
            sys.exit(f"llama_peer: --weights {wd}: f32, f16 or bf16")
    for c in a.cache:
        if c not in ("f16", "bf16"):
            sys.exit(f"llama_peer: --cache {c}: f16 or bf16")
    for c in a.ours_cache:
        if c not in ("f32", "f16", "bf16"):
            sys.exit(f"llama_peer: --ours-cache {c}: f32, f16 or bf16")

    t_start = time.time()
    peer = os.path.abspath(a.peer_dir)
    os.makedirs(peer, exist_ok=True)
    py = make_venv(peer)
    top, llama = llama_src(py, peer, a.llama_cpp_python)
    install_gguf(py, llama)
    exe, binfo = build_llama_bench(peer, top, llama, a.jobs)
    ver = subprocess.run([exe, "--version"], capture_output=True, text=True)
    version = (ver.stdout + ver.stderr).strip().splitlines()
    log(f"llama.cpp: llama-cpp-python {binfo['llama_cpp_python']} vendoring llama.cpp@{binfo['commit']}"
        f" ({'; '.join(version)}); llama-bench built in {binfo['build_s']:.0f} s")
    models = {wd: ensure_gguf(py, peer, wd, a) for wd in a.weights}
    if a.setup_only:
        for wd, p in models.items():
            log(f"{wd}: {p}")
        return

    out_dir = os.path.dirname(os.path.abspath(a.json))
    os.makedirs(out_dir, exist_ok=True)
    load0 = os.getloadavg()
    # Context by context, llama.cpp then mla-rt, so that both see about the same load
    # on a shared machine.
    lrows, linfo, orows, machine = [], {}, [], {}
    for ctx in a.ctx:
        lr, li = llama_runs(exe, models, a, ctx, out_dir)
        lrows += lr
        for c, i in li.items():
            # keep the log with the most cache cells (the MiB figure is the most precise)
            if i.get("kv_cells", 0) >= linfo.get(c, {}).get("kv_cells", 0):
                linfo[c] = i
        if not a.no_ours:
            orr, machine = ours_runs(a, ctx, out_dir)
            orows += orr
    load1 = os.getloadavg()

    # What llama.cpp said about the model and its cache.
    for c, i in linfo.items():
        log(f"\nllama.cpp loaded ({c} cache): " + ", ".join(f"{k} = {v}" for k, v in i.items()))
        mla_ok = (i.get("n_embd_head_k_mla") == str(NOPE + ROPE) and i.get("n_lora_kv") == str(R)
                  and i.get("kv_V_MiB", 1.0) == 0.0 and i.get("flash_attn") == "enabled")
        log("absorbed MLA, flash attention, latent-only cache (no V): "
            + ("yes" if mla_ok else "NOT CONFIRMED (see the logs)"))
        if "kv_bytes_per_token_layer" in i:
            log(f"llama.cpp cache bytes per token per layer: {i['kv_bytes_per_token_layer']} = (512 + 64) x "
                f"{i['kv_bytes_per_token_layer'] // (R + ROPE)} ({i['kv_type_k']}); log: K {i['kv_K_MiB']} MiB "
                f"for {i['kv_cells']} cells, V {i['kv_V_MiB']} MiB"
                + ("" if i.get("kv_log_agrees") else "  (DOES NOT MATCH the log)"))

    ours = {}
    for r in orows:
        ours[(r["ctx"], r["threads"], r["weights"], r["cache"], r["mode"])] = (r["ms"], r["ms_min"])
    first = lrows[0] if lrows else {}
    log(f"\nDeepSeek-V2-Lite attention dims, decode, CPU: {first.get('cpu_info', '?')}")
    log(f"llama.cpp {first.get('build_commit', '?')} (build {first.get('build_number', '?')}), "
        f"{a.layers}-layer GGUF, ffn {a.ffn}, vocab {a.vocab}, n_gen {a.n_gen} x {a.reps} reps; "
        f"mla-rt {machine.get('version', '?')}, kernels {machine.get('isa', '?')}")
    log("ms per token per layer (llama.cpp: divided by the GGUF's layer count, non-attention work "
        "included), median and min of the repetitions; ratio = llama.cpp / mla-rt (> 1: mla-rt faster)")
    hdr = (f"{'ctx':>6} {'thr':>3} {'weights':>7} {'cache':>5} {'llama.cpp':>9} {'(min)':>7}"
           f" {'cache':>5}")
    for m in a.modes:
        hdr += f" {'mla-rt ' + m:>11} {'(min)':>7} {'ratio':>5} {'(min)':>5}"
    log(hdr)
    out = []
    wi = {w: i for i, w in enumerate(a.weights)}
    ci = {c: i for i, c in enumerate(a.cache)}
    for r in sorted(lrows, key=lambda r: (r["ctx"], r["threads"], wi.get(r["weights"], 9), ci.get(r["cache"], 9))):
        lm, lmin = r["ms"] / a.layers, r["ms_min"] / a.layers
        for oc in (a.ours_cache if not a.no_ours else ["-"]):
            line = (f"{r['ctx']:>6} {r['threads']:>3} {r['weights']:>7} {r['cache']:>5} {lm:>9.3f} {lmin:>7.3f}"
                    f" {oc:>5}")
            rec = dict(r, kind="llama_peer", llama_ms=lm, llama_ms_min=lmin, layers=a.layers, ours_cache=oc)
            for m in a.modes:
                o = ours.get((r["ctx"], r["threads"], r["weights"], oc, m))
                if o is None:
                    line += f" {'-':>11} {'-':>7} {'-':>5} {'-':>5}"
                else:
                    line += f" {o[0]:>11.3f} {o[1]:>7.3f} {lm / o[0]:>5.2f} {lmin / o[1]:>5.2f}"
                    rec.update({f"ours_{m}_ms": o[0], f"ours_{m}_ms_min": o[1],
                                f"ratio_{m}": lm / o[0], f"ratio_{m}_min": lmin / o[1]})
            log(line)
            out.append(rec)
    elapsed = time.time() - t_start
    ncpu = os.cpu_count() or 1
    log(f"\nload average {load0[0]:.2f} at the start, {load1[0]:.2f} at the end ({ncpu} CPUs); "
        f"this run took {elapsed / 60:.1f} min")
    if max(load0[0], load1[0]) > ncpu:
        log("the machine was busy: other processes took CPU time from both programs, and figures with "
            "more than one thread measure the scheduler as much as the code (a thread that waits at a "
            "barrier for a descheduled sibling); compare the min columns, or rerun on a quiet machine")

    stamp = os.path.join(peer, "last-full-run.json")
    full = not a.quick and a.ctx == [1024, 4096, 16384] and len(a.threads) > 1
    if full:
        json.dump({"seconds": round(elapsed), "when": time.strftime("%Y-%m-%d %H:%M")}, open(stamp, "w"))
    elif os.path.isfile(stamp):
        s = json.load(open(stamp))
        log(f"the last full run here ({s['when']}) took {s['seconds'] / 60:.1f} min")
    else:
        log("the full run (3 contexts x 2 thread counts x f32+bf16) takes 10-20 min on 2 cores "
            "once built")

    with open(a.json, "w") as f:
        f.write(json.dumps({"kind": "llama_info", "log": linfo, "llama_cpp_python": binfo["llama_cpp_python"],
                            "commit": binfo["commit"], "build_s": binfo["build_s"],
                            "loadavg_start": load0[0], "loadavg_end": load1[0]}) + "\n")
        if machine:
            f.write(json.dumps(machine) + "\n")
        for rec in out:
            f.write(json.dumps(rec) + "\n")
    log(f"wrote {os.path.relpath(a.json, ROOT) if a.json.startswith(ROOT) else a.json}")


if __name__ == "__main__":
    main()
