#!/usr/bin/env bash
# llama-cpp-python (the [gguf] extra: GGUF models through llama.cpp) has no wheel on PyPI for Linux, so pip
# compiles llama.cpp (~15 min on 2 cores). Build it once here, without the parts the project does not use
# (llava/mtmd, tests, examples), into .cache/wheels; the README test command installs from there with
# --find-links, and pip also keeps the build in its own wheel cache (~/.cache/pip/wheels), so a machine that
# built it before installs it in seconds. Idempotent: an existing wheel, or pip's cached build, is reused.
set -euo pipefail
cd "$(dirname "$0")/../.."
VERSION=0.3.36
WHEELS=.cache/wheels
if ls "$WHEELS"/llama_cpp_python-"$VERSION"-*.whl >/dev/null 2>&1; then
  echo "-- llama-cpp-python $VERSION already in $WHEELS"; exit 0
fi
mkdir -p "$WHEELS"
export CMAKE_ARGS="-DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF"
export CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)"
python3 -m pip wheel --quiet --no-deps "llama-cpp-python==$VERSION" -w "$WHEELS"
ls -l "$WHEELS"/llama_cpp_python-"$VERSION"-*.whl
