#!/usr/bin/env bash
# Builds ftk and runs the cmocka suites with ctest.
#   scripts/test.sh              Release build in build/, every suite
#   scripts/test.sh --sanitize   ASan+UBSan (+ LeakSanitizer) build in build-asan/, every suite but the
#                                slow end-to-end CLI ones (ctest: 20 s to 2.5 min on 2 shared cores)
#   scripts/test.sh --valgrind   Release build with -g and without -march=native (valgrind cannot run
#                                AVX-512) in build-valgrind/, the same suites but test_bench under
#                                valgrind memcheck, leaks are errors (ctest: ~3.5 min on 2 cores;
#                                not run in CI)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
export FTK_SHARED="${FTK_SHARED:-$(cd .. && pwd)/shared}"
jobs=$(nproc 2>/dev/null || echo 2)
# Suites that train through the ftk binary for a minute or more: covered by the plain run only.
slow_cli='^(test_sft|test_rm|test_dpo|test_ppo|test_merge|test_export)$'
case "${1:-}" in
--sanitize)
  cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFTK_SANITIZE=ON >/dev/null
  cmake --build build-asan -j"$jobs"
  (cd build-asan && ASAN_OPTIONS=detect_leaks=1 ctest --output-on-failure -j"$jobs" -E "$slow_cli")
  ;;
--valgrind)
  command -v valgrind >/dev/null || { echo "valgrind is not installed" >&2; exit 1; }
  # CMAKE_CROSSCOMPILING_EMULATOR prefixes every add_test command, so ctest runs each suite under
  # valgrind with the environment CMakeLists.txt gives it.
  # No suppressions needed: OpenBLAS shuts its thread pool down at exit (checked with 2 threads).
  vg="valgrind;--error-exitcode=1;--leak-check=full;--num-callers=30"
  cmake -S . -B build-valgrind -DCMAKE_BUILD_TYPE=Release -DFTK_NATIVE=OFF -DCMAKE_C_FLAGS=-g \
    "-DCMAKE_CROSSCOMPILING_EMULATOR=$vg" >/dev/null
  cmake --build build-valgrind -j"$jobs"
  # test_bench measures the machine's GFLOP/s, which valgrind divides by ~50; timing limits in
  # the other suites are scaled by FTK_TEST_TIME_SCALE.
  (cd build-valgrind && FTK_TEST_TIME_SCALE=50 ctest --output-on-failure -j"$jobs" \
    -E "$slow_cli|^test_bench\$")
  ;;
"")
  cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build build -j"$jobs"
  (cd build && ctest --output-on-failure)
  ;;
*)
  echo "usage: scripts/test.sh [--sanitize | --valgrind]" >&2
  exit 2
  ;;
esac
