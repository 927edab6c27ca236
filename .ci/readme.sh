#!/usr/bin/env bash
# .ci/readme.sh: runs the README's code as a reader would (called by tools/test.sh;
# runnable on its own after `tools/setup.sh test`).
#
# The README marks each block it promises works with an HTML comment on the line
# before the fence: `<!-- readme.sh: NAME -->` (invisible when rendered). This
# script takes every marked block from README.md and:
#
#   tiny.c          must be byte-identical to ffi-examples/tiny.c
#   tiny-output     what tiny prints: every tiny program built below must print it
#                   (out[0] compared to 1e-5: the last digit may differ by ISA)
#   build, c-static, c-shared
#                   shell blocks, run as written with bash -e from the repository root
#   install         shell block (make install, pkg-config shared and static), run as
#                   written; PREFIX=/opt/mla is a private tmpfs mount in a mount
#                   namespace of its own (unshare), so the machine's /opt/mla is never
#                   touched; without unshare, /opt/mla is replaced by a temporary
#                   directory in the commands (said so on stdout)
#   cmake           the CMake project (must equal ffi-examples/host-cmake/CMakeLists.txt)
#   cmake-build     shell block, run as written after `install`, in the same namespace
#   rust-main       must be byte-identical to examples/readme.rs
#   rust-toml       the Cargo.toml of a new project beside a clone of this repository
#   rust-run        shell block run in that project (a temporary directory with the
#                   repository as ../mla-rt); offline, with this repository's Cargo.lock
#   rust-output     what the Rust program prints (out[0] compared to 1e-5)
#
# Every block named here must exist, and every marked block must be used here.
# The README's commands use the default target directory (./target): this script
# unsets CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
unset CARGO_TARGET_DIR
README=README.md
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
fail() {
    echo "readme.sh: FAIL: $*" >&2
    exit 1
}

# block NAME: prints the marked block's content (without the fences).
block() {
    awk -v name="$1" '
        $0 == "<!-- readme.sh: " name " -->" { want = 1; next }
        want == 1 && /^```/ { want = 2; next }
        want == 1 { exit 1 }
        want == 2 && /^```/ { found = 1; exit }
        want == 2 { print }
        END { if (!found) exit 1 }
    ' "$README" || fail "README.md has no block marked '<!-- readme.sh: $1 -->' followed by a fenced block"
}

USED="tiny.c tiny-output build c-static c-shared install cmake cmake-build rust-main rust-toml rust-run rust-output"
for name in $(sed -n 's/^<!-- readme.sh: \(.*\) -->$/\1/p' "$README"); do
    [[ " $USED " == *" $name "* ]] || fail "README.md marks a block '$name' that this script does not check"
done

same_as_file() { # NAME FILE
    if ! diff -u "$2" <(block "$1") >"$WORK/diff"; then
        cat "$WORK/diff"
        fail "the README's '$1' block differs from $2 (diff above: - file, + README)"
    fi
    echo "README '$1' block = $2"
}

# expect_output NAME FILE: FILE (a program's output) against the README's block:
# the same text, except that numbers may differ by 1e-5.
expect_output() {
    block "$1" >"$WORK/want"
    if ! python3 - "$WORK/want" "$2" <<'EOF'; then
import re, sys
want, got = (open(p).read().strip().splitlines() for p in sys.argv[1:3])
num = re.compile(r"-?\d+\.\d+(?:e-?\d+)?")
ok = len(want) == len(got)
for w, g in zip(want, got):
    ok = ok and num.sub("#", w) == num.sub("#", g)
    wn, gn = num.findall(w), num.findall(g)
    ok = ok and len(wn) == len(gn) and all(abs(float(a) - float(b)) <= 1e-5 for a, b in zip(wn, gn))
sys.exit(0 if ok else 1)
EOF
        echo "README '$1' says:"
        cat "$WORK/want"
        echo "the program printed:"
        cat "$2"
        fail "output differs from the README's '$1' block"
    fi
}

# run_block NAME: runs a shell block from the repository root, echoing each line.
run_block() {
    echo "--- README '$1' block:"
    block "$1" | sed 's/^/    /'
    block "$1" >"$WORK/$1.sh"
    (cd "$ROOT" && bash -e "$WORK/$1.sh") 2>&1 | tee "$WORK/$1.out" ||
        fail "the README's '$1' block failed (output above)"
}

# Checks that each line of the block's output that comes from tiny matches.
check_tiny_runs() { # NAME COUNT
    grep -E '^[0-9]+ tokens cached' "$WORK/$1.out" >"$WORK/$1.tiny" || true
    [ "$(wc -l <"$WORK/$1.tiny")" = "$2" ] || fail "'$1': expected $2 runs of tiny, saw $(wc -l <"$WORK/$1.tiny")"
    while read -r line; do
        echo "$line" >"$WORK/one"
        expect_output tiny-output "$WORK/one"
    done <"$WORK/$1.tiny"
    echo "'$1': $2 tiny runs print what the README says"
}

# --- C -------------------------------------------------------------------------
same_as_file tiny.c ffi-examples/tiny.c
run_block build
run_block c-static
check_tiny_runs c-static 1
run_block c-shared
check_tiny_runs c-shared 1

same_as_file cmake ffi-examples/host-cmake/CMakeLists.txt
block install >"$WORK/install.sh"
block cmake-build >"$WORK/cmake-build.sh"
echo "--- README 'install' block:"
sed 's/^/    /' "$WORK/install.sh"
echo "--- README 'cmake-build' block:"
sed 's/^/    /' "$WORK/cmake-build.sh"
cat >"$WORK/prefix-run.sh" <<EOF
set -e
cd "$ROOT"
echo "## install"
bash -e "$WORK/install.sh"
echo "## cmake-build"
bash -e "$WORK/cmake-build.sh"
EOF
created_opt_mla=""
if unshare --mount --propagation private true 2>/dev/null; then
    [ -e /opt/mla ] || { mkdir -p /opt/mla && created_opt_mla=1; }
    echo "(/opt/mla: a private tmpfs in a mount namespace of its own)"
    unshare --mount --propagation private \
        bash -c 'mount -t tmpfs tmpfs /opt/mla && exec bash -e "$1"' _ "$WORK/prefix-run.sh" 2>&1 |
        tee "$WORK/prefix.out" || { [ -z "$created_opt_mla" ] || rmdir /opt/mla; fail "install/cmake blocks (output above)"; }
    [ -z "$created_opt_mla" ] || rmdir /opt/mla
else
    echo "(no unshare: /opt/mla in the commands is replaced by $WORK/opt-mla)"
    sed -i "s|/opt/mla|$WORK/opt-mla|g" "$WORK/install.sh" "$WORK/cmake-build.sh"
    bash -e "$WORK/prefix-run.sh" 2>&1 | tee "$WORK/prefix.out" || fail "install/cmake blocks (output above)"
fi
sed -n '/^## install$/,/^## cmake-build$/p' "$WORK/prefix.out" >"$WORK/install.out"
sed -n '/^## cmake-build$/,$p' "$WORK/prefix.out" >"$WORK/cmake-build.out"
check_tiny_runs install 2
check_tiny_runs cmake-build 2
grep -q "^host_cpp: " "$WORK/cmake-build.out" || fail "'cmake-build': host_cpp did not run"

# --- Rust ------------------------------------------------------------------------
same_as_file rust-main examples/readme.rs
echo "--- cargo run --release --example readme"
cargo run --quiet --release --example readme >"$WORK/example.out"
cat "$WORK/example.out"
expect_output rust-output "$WORK/example.out"

# A new project beside a clone of this repository, as the README describes it.
APP=$WORK/app
mkdir -p "$APP/src"
ln -s "$ROOT" "$WORK/mla-rt"
block rust-toml >"$APP/Cargo.toml"
block rust-main >"$APP/src/main.rs"
cp Cargo.lock "$APP/Cargo.lock" # the versions this repository is tested with, already fetched
echo "--- README 'rust-run' block, in a new project ($APP, with ../mla-rt):"
block rust-run | sed 's/^/    /'
block rust-run >"$WORK/rust-run.sh"
(cd "$APP" && CARGO_NET_OFFLINE=true bash -e "$WORK/rust-run.sh") >"$WORK/rust-run.out" 2>"$WORK/rust-run.err" ||
    { cat "$WORK/rust-run.err" "$WORK/rust-run.out"; fail "the README's 'rust-run' block failed"; }
cat "$WORK/rust-run.out"
expect_output rust-output "$WORK/rust-run.out"

echo "readme.sh: every README example builds, runs and prints what the README says"
