#!/usr/bin/env bash
# Builds ftk and runs the cmocka suites with ctest.
#   scripts/test.sh              Release build in build/, every suite
#   scripts/test.sh --sanitize   ASan+UBSan build in build-asan/, the suites labelled for it
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
export FTK_SHARED="${FTK_SHARED:-$(cd .. && pwd)/shared}"
jobs=$(nproc 2>/dev/null || echo 2)
if [ "${1:-}" = "--sanitize" ]; then
  cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFTK_SANITIZE=ON >/dev/null
  cmake --build build-asan -j"$jobs"
  # Suites whose name ends in _badinput or that parse files run under the sanitizers.
  (cd build-asan && ASAN_OPTIONS=detect_leaks=1 ctest --output-on-failure -R 'badinput|common|tokenizer|safetensors|gguf|dataset')
else
  cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build build -j"$jobs"
  (cd build && ctest --output-on-failure)
fi
