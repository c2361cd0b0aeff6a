#!/usr/bin/env bash
# Build llama.cpp's CPU tools for bench/llama_cpp.py.
#
#     bench/build-llama-cpp.sh  # -> $LLAMA_CPP_DIR/build/bin/llama-{server,quantize,bench,batched-bench}
#
# bench/llama_cpp.py runs llama-server, and llama-quantize for its --dtype q8_0|q4_0 files;
# llama-bench and llama-batched-bench, llama.cpp's own benchmarks, cost two small links more
# and let its figures be checked by hand.
#
# The sources are the llama.cpp vendored in llama-cpp-python's PyPI sdist: pip reaches PyPI
# where GitHub may be out of reach, and the sdist pins one llama.cpp commit. Runs again are
# free: the build is skipped when the binaries exist.
#
#   LLAMA_CPP_DIR      where the sources and the build go (default /tmp/fireside-llama-cpp)
#   LLAMA_CPP_SDIST    an already downloaded llama_cpp_python-*.tar.gz (default: pip download)
#   LLAMA_CPP_VERSION  the llama-cpp-python release to download (default 0.3.36)
#   JOBS               parallel compile jobs (default 2)
set -euo pipefail

DIR=${LLAMA_CPP_DIR:-/tmp/fireside-llama-cpp}
VERSION=${LLAMA_CPP_VERSION:-0.3.36}
JOBS=${JOBS:-2}
TARGETS=(llama-server llama-quantize llama-bench llama-batched-bench)
BIN=$DIR/build/bin

built() {
    for t in "${TARGETS[@]}"; do [ -x "$BIN/$t" ] || return 1; done
}
if built; then
    echo "llama.cpp already built in $BIN"
    exit 0
fi

mkdir -p "$DIR"
SDIST=${LLAMA_CPP_SDIST:-}
if [ -z "$SDIST" ]; then
    SDIST=$(ls "$DIR"/llama_cpp_python-"$VERSION".tar.gz 2>/dev/null || true)
fi
if [ -z "$SDIST" ]; then
    # The sdist is the only distribution that carries the C++ sources. Not `--no-binary :all:`:
    # pip reads the sdist's metadata in a build environment, whose build tools (cmake among
    # them) would then be compiled from source too.
    python3 -m pip download "llama-cpp-python==$VERSION" --no-deps --no-binary llama-cpp-python \
        -d "$DIR"
    SDIST=$DIR/llama_cpp_python-$VERSION.tar.gz
fi

SRC=$DIR/src
if [ ! -f "$SRC/CMakeLists.txt" ]; then
    rm -rf "$SRC" && mkdir -p "$SRC"
    tar -xzf "$SDIST" -C "$SRC" --strip-components=3 --exclude=.git \
        "$(basename "$SDIST" .tar.gz)/vendor/llama.cpp"
fi

# Static libraries make the binaries self-contained; no tests, examples, web UI download or
# TLS, because the benchmark needs none of them. GGML_NATIVE tunes for this CPU (AVX2 here)
# as a user building llama.cpp for their own machine would.
cmake -S "$SRC" -B "$DIR/build" -G Ninja \
    -DCMAKE_BUILD_TYPE=Release \
    -DBUILD_SHARED_LIBS=OFF \
    -DGGML_NATIVE=ON \
    -DGGML_CUDA=OFF -DGGML_METAL=OFF -DGGML_VULKAN=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF \
    -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF \
    -DLLAMA_OPENSSL=OFF
# nice: the machine is shared and may be running timing benchmarks of its own.
nice -n 10 cmake --build "$DIR/build" -j "$JOBS" --target "${TARGETS[@]}"
echo "llama.cpp built in $BIN"
