#!/usr/bin/env bash
# The main job: installs what is missing, builds, starts app-server on
# 127.0.0.1 (port 65432, or $PORT) and shows app-client's answers to search
# and binary requests, then stops the server with SIGTERM.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc 2>/dev/null || echo 2)" >/dev/null
host=127.0.0.1
port=${PORT:-65432}
bin=build/examples
log=$(mktemp)
"$bin/app-server" "$host" "$port" 2>"$log" &
server=$!
trap 'kill "$server" 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 50); do # wait until it listens (at most 5 s)
  grep -q "listening on" "$log" && break
  kill -0 "$server" 2>/dev/null || { cat "$log" >&2; exit 1; }
  sleep 0.1
done
show() {
  printf '$ app-client %s %s %s %s\n' "$host" "$port" "$1" "$2"
  "$bin/app-client" "$host" "$port" "$1" "$2"
}
show search morpheus
show search ring
show search 🐶
show search nosuchkey
show double 42
printf '$ printf "search morpheus\\nsearch ring\\nlookup xyz\\n" | app-client %s %s -\n' "$host" "$port"
printf 'search morpheus\nsearch ring\nlookup xyz\n' | "$bin/app-client" "$host" "$port" -
kill -TERM "$server"
wait "$server"
echo "--- app-server's log:"
cat "$log"
