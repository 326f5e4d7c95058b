#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan+UBSan) and fuzzes each for
# SECONDS (default 60), starting from a seed corpus: proto/vectors for the codec
# targets, the operation sequences of fuzz/corpus-seeds/fuzz_client/*.ops
# (fuzz/fuzz_client_ops.py) for the client.
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]   (targets: fuzz_decoder fuzz_json fuzz_client)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(fuzz_decoder fuzz_json fuzz_client)
bash scripts/deps.sh clang libclang-rt-dev
CC=clang cmake -S . -B build-fuzz -DAPPMSG_FUZZ=ON -DAPPMSG_BUILD_TESTS=OFF \
  -DAPPMSG_BUILD_EXAMPLES=OFF -DAPPMSG_BUILD_BENCH=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build-fuzz -j"$(nproc 2>/dev/null || echo 2)" >/dev/null
seeds=build-fuzz/seeds
rm -rf "$seeds" && mkdir -p "$seeds/fuzz_decoder" "$seeds/fuzz_json" "$seeds/fuzz_client"
for v in $(find proto/vectors -name '*.vec' | sort); do
  name=$(basename "$v" .vec)
  python3 proto/tools/appmsg_ref.py hex2bin "$v" "$seeds/raw.bin"
  # fuzz_decoder: a mode byte (0: default limits, whole) then the stream.
  { printf '\000'; cat "$seeds/raw.bin"; } >"$seeds/fuzz_decoder/$name"
  # fuzz_json: the header JSON of the first frame.
  python3 - "$seeds/raw.bin" "$seeds/fuzz_json/$name" <<'PY'
import sys
b = open(sys.argv[1], "rb").read()
if len(b) >= 2:
    open(sys.argv[2], "wb").write(b[2:2 + (b[0] << 8 | b[1])])
PY
done
# fuzz_client: hand-written operation sequences (and every bug's reproducer), assembled.
for s in fuzz/corpus-seeds/fuzz_client/*.ops; do
  python3 fuzz/fuzz_client_ops.py asm "$s" "$seeds/fuzz_client/$(basename "$s" .ops)"
done
for t in "${targets[@]}"; do
  corpus=build-fuzz/corpus-$t
  # A client input is a list of operations: a few thousand are plenty, and keep runs fast.
  max_len=70000
  [ "$t" = fuzz_client ] && max_len=4096
  mkdir -p "$corpus"
  echo "== $t for ${secs}s"
  rc=0
  build-fuzz/fuzz/$t -max_total_time="$secs" -timeout=10 -rss_limit_mb=4096 -max_len="$max_len" \
    -print_final_stats=1 -artifact_prefix=build-fuzz/ "$corpus" "$seeds/$t" >build-fuzz/$t.log 2>&1 || rc=$?
  grep -E "Done [0-9]+ runs|stat::number_of_executed_units|ERROR|SUMMARY|check failed" build-fuzz/$t.log || true
  if [ "$rc" -ne 0 ]; then
    tail -40 build-fuzz/$t.log
    echo "fuzz: $t failed (exit $rc; crash input in build-fuzz/)"
    exit 1
  fi
done
echo "fuzz: no failures"
