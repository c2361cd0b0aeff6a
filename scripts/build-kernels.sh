#!/usr/bin/env bash
# Build libfireside_ggml.so, the ggml CPU kernels behind quantized weights (fireside/kernels/).
#
#     scripts/build-kernels.sh        # -> fireside/kernels/_build/libfireside_ggml.so
#
# `make install`, `make serve` and `make test` run it (the Makefile's `kernels` target). ggml's
# sources are the ones vendored in llama-cpp-python's PyPI sdist (the same pin as
# bench/build-llama-cpp.sh): pip reaches PyPI where GitHub may be out of reach. The download is
# checked against its sha256 and cached in ~/.cache/fireside/. A second run is a no-op: the build
# is skipped while the stamp (a hash of the sdist pin, the C source, CMakeLists.txt and this
# script) matches. Needs cmake and a C/C++ compiler; ninja when there is one.
#
#   FIRESIDE_KERNELS_BUILD  where the build and the library go (default fireside/kernels/_build,
#                           git-ignored)
#   FIRESIDE_CACHE          the download and ggml's unpacked sources (default ~/.cache/fireside)
#   GGML_OPENMP             OFF (default: ggml's own threadpool) or ON (OpenMP's, torch's libgomp)
#   JOBS                    parallel compile jobs (default: the number of cores)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CSRC=$ROOT/fireside/kernels/csrc
OUT=${FIRESIDE_KERNELS_BUILD:-$ROOT/fireside/kernels/_build}
CACHE=${FIRESIDE_CACHE:-$HOME/.cache/fireside}
VERSION=0.3.36
SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
SDIST=$CACHE/llama_cpp_python-$VERSION.tar.gz
OPENMP=${GGML_OPENMP:-OFF}
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 2)}
LIB=$OUT/libfireside_ggml.so
PYTHON=${PYTHON:-python3}

mkdir -p "$OUT" "$CACHE"
# Two test workers (or a test and `make`) may start a build at once: one builds, the other waits.
exec 9>"$OUT/.lock"
flock 9

key=$( (echo "$VERSION $SHA256 openmp=$OPENMP"; cat "$CSRC/fireside_ggml.c" "$CSRC/CMakeLists.txt" "$0") | sha256sum | cut -d' ' -f1)
if [ -f "$LIB" ] && [ "$(cat "$OUT/.stamp" 2>/dev/null)" = "$key" ]; then
    touch "$LIB"  # for make: up to date
    echo "fireside kernels up to date: $LIB"
    exit 0
fi

start=$(date +%s)
for tool in c++ cc; do
    command -v "$tool" >/dev/null || { echo "build-kernels: no C/C++ compiler ($tool): apt-get install g++ (or build-essential)" >&2; exit 1; }
done
if ! command -v cmake >/dev/null; then
    # No cmake on the machine: PyPI's cmake and ninja wheels, kept beside the download.
    TOOLS=$CACHE/build-tools
    if [ ! -x "$TOOLS/bin/cmake" ]; then
        "$PYTHON" -m pip install --quiet --target "$TOOLS" cmake ninja \
            || { echo "build-kernels: cmake not found and pip could not install it: apt-get install cmake" >&2; exit 1; }
    fi
    export PATH="$TOOLS/bin:$PATH" PYTHONPATH="$TOOLS${PYTHONPATH:+:$PYTHONPATH}"
fi

# The cache is shared by checkouts: one process downloads and unpacks at a time.
exec 8>"$CACHE/.lock"
flock 8
if ! echo "$SHA256  $SDIST" | sha256sum -c --status 2>/dev/null; then
    rm -f "$SDIST"
    # The sdist is the only distribution that carries the C sources. Not `--no-binary :all:`:
    # pip reads the sdist's metadata in a build environment whose tools would be compiled too.
    "$PYTHON" -m pip download --quiet "llama-cpp-python==$VERSION" --no-deps --no-binary llama-cpp-python -d "$CACHE"
    echo "$SHA256  $SDIST" | sha256sum -c --status || { echo "build-kernels: $SDIST does not match its sha256" >&2; exit 1; }
fi

# The sources sit beside the download (shared by checkouts; they hold Python scripts that lint
# and type checks of this tree must not see), unpacked under a temporary name and renamed.
SRC=$CACHE/ggml-$VERSION
if [ ! -f "$SRC/CMakeLists.txt" ]; then
    tmp=$(mktemp -d "$CACHE/.ggml-XXXXXX")
    tar -xzf "$SDIST" -C "$tmp" --strip-components=4 "llama_cpp_python-$VERSION/vendor/llama.cpp/ggml"
    rm -rf "$SRC" && mv "$tmp" "$SRC"
fi
flock -u 8

GEN=()
command -v ninja >/dev/null && GEN=(-G Ninja)
cmake -S "$CSRC" -B "$OUT/cmake" "${GEN[@]}" -DCMAKE_BUILD_TYPE=Release -DGGML_SOURCE_DIR="$SRC" \
    -DGGML_OPENMP="$OPENMP" -DCMAKE_LIBRARY_OUTPUT_DIRECTORY="$OUT" >"$OUT/cmake.log" 2>&1 \
    || { cat "$OUT/cmake.log" >&2; exit 1; }
# nice: the machine may be serving or benchmarking while this compiles.
# The log is kept (ggml's compiler warnings are long); shown when the build fails.
nice -n 10 cmake --build "$OUT/cmake" -j "$JOBS" --target fireside_ggml >"$OUT/build.log" 2>&1 \
    || { tail -n 60 "$OUT/build.log" >&2; echo "build-kernels: the build failed, log: $OUT/build.log" >&2; exit 1; }
echo "$key" >"$OUT/.stamp"
echo "fireside kernels built in $(( $(date +%s) - start ))s: $LIB"
