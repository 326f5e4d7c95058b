#!/usr/bin/env bash
# bench/run.sh: app-server against the machine's practical limit (baseline-server, an epoll echo
# server with no parsing) and against redis-server, under the same load from appmsg-bench.
#
#   bash bench/run.sh                 # ROUNDS=3 DURATION=5 IDLE_CONNS=10000 PORT_BASE=21400 PERF=0
#                                     # TLS=1 IDLE_TLS_CONNS=2000
#   REDRAW=build-bench/results.txt bash bench/run.sh   # bench/results.png again from the last run
#
# Builds Release into build-bench/ (with hiredis, libhiredis-dev, for app-server --redis), installs
# redis-server and redis-tools with apt-get if missing (as root; without them the redis rows are
# skipped), then, ROUNDS times, interleaved (the order
# flips every round), DURATION seconds each, 50 connections:
#   P1       app-server (search, the guide's 146-byte frame) vs baseline (echo of the same bytes)
#   P16      the same with 16 requests in flight per connection, and redis GET under
#            redis-benchmark -P 16 -c 50 -t get
#   new conn a new connection per request (50 concurrent connectors), app-server vs baseline
#   P16 lib  app-server at P16 loaded through the client library (client-bench, client.h)
#            beside appmsg-bench's own client
#   P16 cli  the same load from the appmsg command (appmsg bench search value=morpheus -c 50
#            -P 16), beside appmsg-bench: the ratio appmsg bench / appmsg-bench
#   P16 Redis app-server --redis at P16, its searches answered from the same redis-server (one
#            GET each, pipelined): req/s beside redis-benchmark's GET, and the CPU per request
#            of app-server and of redis-server, each on its own (both servers on core 0)
#   P16 nm   app-server --no-measure at P16 (no per-action counts or latency): what measuring
#            every request costs, as server CPU per request measured / not measured
#   P16 x2   app-server --threads 2 at P16 (unpinned: its two threads and the load generator
#            share the two cores), for its server CPU per request against --threads 1 placed
#            the same way (a second app-server, unpinned too: pinning alone changes the CPU per
#            request, so the pinned P16 row is not the measure of what a thread costs)
#   HAProxy  P1, P16 and new conn again through HAProxy (TCP mode, one thread, on the server's
#            core), for app-server and for the baseline: HAProxy's own cost, and appmsg's share
#            of what is lost through it (HAPROXY=0 skips these; haproxy is installed if missing)
# and, with TLS=1 (the default), the same over TLS: app-server --tls-cert/--tls-key (a second
# process) beside redis-server's own TLS port (--tls-port, the same certificates, ECDSA P-256 from
# tests/tls/make_certs.sh) under appmsg-bench --tls and redis-benchmark --tls; redis without TLS
# at pipeline 1 and 16 and with a new connection per request (redis-benchmark -k 0) too, so that
# both TLS/plaintext ratios come from the same run.  Every TLS connection makes a full handshake.
# Servers run on core 0 and the load generator on core 1 (taskset, with 2+ cores).  For each run
# the server's CPU time (utime+stime from /proc/PID/stat) is read before and after.  Then each
# server is started afresh and IDLE_CONNS idle connections are opened to it: the RSS it gains,
# divided by IDLE_CONNS, is its user-space memory per idle connection (and IDLE_TLS_CONNS
# connections, handshake done, to the TLS servers).  Prints every run, then a
# table of medians, ratios and the targets.  PERF=1 also records app-server with perf
# (cpu-clock, call graphs) during one extra P1 and one extra P16 run: build-bench/perf/*.txt.
# Last, it draws the medians - req/s and p99 latency per workload, one bar per server, whatever
# rows the run has - with gnuplot (gnuplot-nox, installed if missing) into bench/results.png.
# Loopback only; every load is bounded; every server started here is killed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
IDLE_CONNS=${IDLE_CONNS:-10000}
PORT_BASE=${PORT_BASE:-21400} # below the ephemeral range (32768-60999), so no client port collides
PERF=${PERF:-0}
HAPROXY=${HAPROXY:-1}
TLS=${TLS:-1}
IDLE_TLS_CONNS=${IDLE_TLS_CONNS:-2000}
BUILD=build-bench
HOST=127.0.0.1
CONNS=50

TMP=$(mktemp -d)
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do
    kill "$p" 2>/dev/null || true
  done
  for p in "${PIDS[@]}"; do
    wait "$p" 2>/dev/null || true
  done
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { printf '%s\n' "$*"; }

# ---- the picture (defined here: REDRAW uses it before any run) ------------------------------------------------------------------------------------------------
# Medians of every row in the results (KEY is WORKLOAD.SERVER): req/s and p99 latency, one group
# of bars per workload, one bar per server; rows added to this script appear by themselves (a
# server name not known below is shown as it is written in its key).
draw_results() { # draw_results PNG
  local m
  for m in 3:rps 5:p99; do
    awk -v c="${m%%:*}" '
      function median(key,    n, i, j, t, a) {
        n = cnt[key]; for (i = 1; i <= n; i++) a[i] = v[key, i]
        for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
        return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
      }
      function wname(w) {
        if (w == "p1") return "P1: 1 request in flight"
        if (w == "p16") return "P16: 16 in flight"
        if (w == "nc") return "a new connection per request"
        return w
      }
      function sname(s) {
        if (s == "app") return "app-server"
        if (s == "appr") return "app-server --redis (answers from Redis)"
        if (s == "base") return "baseline (raw echo)"
        if (s == "redis") return "redis GET"
        if (s == "app-tls") return "app-server over TLS"
        if (s == "redis-tls") return "redis GET over TLS"
        if (s == "lib") return "app-server, load via client.h"
        if (s == "cli") return "app-server, load via appmsg bench"
        if (s == "x2") return "app-server --threads 2"
        if (s == "x1") return "app-server --threads 1 (unpinned)"
        if (s == "app-haproxy") return "app-server via HAProxy"
        if (s == "base-haproxy") return "baseline via HAProxy"
        return s
      }
      $c == "-" || $c + 0 <= 0 { next }
      {
        w = $1; sub(/\..*/, "", w); s = substr($1, length(w) + 2)
        if (!(w in wi)) { wi[w] = ++nw; ws[nw] = w }
        if (!(s in si)) { si[s] = ++ns; ss[ns] = s }
        cnt[$1]++; v[$1, cnt[$1]] = $c + 0
        if (min == "" || $c + 0 < min) min = $c + 0
      }
      END {
        printf "# min %g\nworkload", min
        for (j = 1; j <= ns; j++) printf " \"%s\"", sname(ss[j])
        printf "\n"
        for (i = 1; i <= nw; i++) {
          printf "\"%s\"", wname(ws[i])
          for (j = 1; j <= ns; j++) {
            k = ws[i] "." ss[j]
            if (k in cnt) printf " %g", median(k); else printf " -"
          }
          printf "\n"
        }
      }' "$TMP/results" >"$TMP/plot-${m#*:}.dat"
  done
  local n floor_rps floor_p99 title noisy
  n=$(sed -n 2p "$TMP/plot-rps.dat" | awk -F'" "' '{ print NF }')
  floor_rps=$(awk 'NR == 1 { printf "%g", 10 ^ int(log($3) / log(10)) }' "$TMP/plot-rps.dat")
  floor_p99=$(awk 'NR == 1 { printf "%g", 10 ^ int(log($3) / log(10)) }' "$TMP/plot-p99.dat")
  title=$(cat "$TMP/results.title")
  noisy=$(awk '$11 + 0 > 10 { n++ } END { print n + 0 }' "$TMP/results")
  if [ "$noisy" -gt 0 ]; then
    title="$title\\nskewed: other processes took over 10% of the CPU in $noisy of $(wc -l <"$TMP/results") runs"
  fi
  gnuplot <<PLOTEOF
set terminal pngcairo size 1400,1000 font "DejaVu Sans,11"
set output "$1"
set datafile missing "-"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set grid ytics mytics
set logscale y
set multiplot layout 2,1 title "$title"
set key outside right top vertical
colors = "#9400d3 #009e73 #56b4e9 #e69f00 #f0e442 #0072b2 #d55e00 #000000 #cc79a7 #8c564b #7f7f7f #bcbd22 #17becf #ff7f0e"
set title "throughput (higher is better)"
set ylabel "requests/s"
set format y "%.0s%c"
set yrange [$floor_rps:*]
plot for [i=2:$((n + 1))] "$TMP/plot-rps.dat" using i:xtic(1) title columnheader(i) lc rgb word(colors, i - 1)
set title "p99 latency (lower is better)"
set ylabel "microseconds"
set format y "%.0f"
set yrange [$floor_p99:*]
plot for [i=2:$((n + 1))] "$TMP/plot-p99.dat" using i:xtic(1) title columnheader(i) lc rgb word(colors, i - 1)
unset multiplot
PLOTEOF
}

# REDRAW=FILE bash bench/run.sh: draws bench/results.png again from the results a run kept
# (build-bench/results.txt and results.title), without running anything.
if [ -n "${REDRAW:-}" ]; then
  cp "$REDRAW" "$TMP/results"
  cp "${REDRAW%.txt}.title" "$TMP/results.title"
  draw_results bench/results.png
  say "== picture: bench/results.png (from $REDRAW)"
  exit 0
fi


# ---- build --------------------------------------------------------------------------------------
if ! command -v cmake >/dev/null || ! pkg-config --exists libcjson openssl 2>/dev/null ||
  ! command -v openssl >/dev/null; then
  bash scripts/deps.sh
fi
if ! pkg-config --exists hiredis 2>/dev/null && [ "$(id -u)" -eq 0 ]; then
  say "== installing libhiredis-dev"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libhiredis-dev \
    >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1 &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libhiredis-dev \
      >/dev/null 2>&1; } || true
fi
have_hiredis=0
pkg-config --exists hiredis 2>/dev/null && have_hiredis=1
say "== building Release into $BUILD/"
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DAPPMSG_BUILD_TESTS=OFF >/dev/null
cmake --build "$BUILD" -j"$(nproc)" --target app-server appmsg-bench baseline-server client-bench \
  appmsg >/dev/null
APP=$BUILD/examples/app-server
BASE=$BUILD/bench/baseline-server
BENCH=$BUILD/bench/appmsg-bench
LIBBENCH=$BUILD/bench/client-bench
CLITOOL=$BUILD/examples/appmsg
CERTS=$TMP/certs
app_tls=0
if [ "$TLS" = 1 ]; then
  sh tests/tls/make_certs.sh "$CERTS"
  app_tls=1
fi

# ---- redis ----------------------------------------------------------------------------------------
have_redis=1
if ! command -v redis-server >/dev/null || ! command -v redis-benchmark >/dev/null ||
  ! command -v redis-cli >/dev/null; then
  if [ "$(id -u)" -eq 0 ]; then
    say "== installing redis-server redis-tools"
    # RUNLEVEL=1: the package's init script must not start a redis of its own.
    export DEBIAN_FRONTEND=noninteractive RUNLEVEL=1
    { apt-get install -y -qq --no-install-recommends redis-server redis-tools ||
      { apt-get update -qq && apt-get install -y -qq --no-install-recommends redis-server redis-tools; }; } \
      >"$TMP/apt.log" 2>&1 || true
    unset RUNLEVEL
  fi
  if ! command -v redis-server >/dev/null || ! command -v redis-benchmark >/dev/null; then
    have_redis=0
    say "note: redis-server/redis-benchmark not installable here (not root, or no package): redis rows skipped"
  fi
fi

# ---- HAProxy and gnuplot ----------------------------------------------------------------------------
# haproxy for the rows through it; gnuplot-nox (and a font) for bench/results.png.
want=()
[ "$HAPROXY" = 1 ] && ! command -v haproxy >/dev/null && ! [ -x /usr/sbin/haproxy ] && want+=(haproxy)
command -v gnuplot >/dev/null || want+=(gnuplot-nox fonts-dejavu-core)
if [ ${#want[@]} -gt 0 ] && [ "$(id -u)" -eq 0 ]; then
  say "== installing ${want[*]}"
  # RUNLEVEL=1: the haproxy package's init script must not start an HAProxy of its own.
  export DEBIAN_FRONTEND=noninteractive RUNLEVEL=1
  { apt-get install -y -qq --no-install-recommends "${want[@]}" ||
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${want[@]}"; }; } \
    >"$TMP/apt-haproxy.log" 2>&1 || true
  unset RUNLEVEL
fi
HAPROXY_BIN=$(command -v haproxy || { [ -x /usr/sbin/haproxy ] && echo /usr/sbin/haproxy; } || true)
if [ "$HAPROXY" = 1 ] && [ -z "$HAPROXY_BIN" ]; then
  HAPROXY=0
  say "note: haproxy not installable here (not root, or no package): HAProxy rows skipped"
fi
have_gnuplot=1
if ! command -v gnuplot >/dev/null; then
  have_gnuplot=0
  say "note: gnuplot not installable here (not root, or no package): no bench/results.png"
fi

# ---- machine ----------------------------------------------------------------------------------------
need_fds=$((IDLE_CONNS + 1024))
hard=$(ulimit -Hn)
if [ "$hard" != unlimited ] && [ "$hard" -lt "$need_fds" ]; then
  ulimit -Hn "$need_fds" 2>/dev/null || true
fi
ulimit -Sn "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
  SRV=(taskset -c 0)
  CLI=(taskset -c 1)
  pinning="server on core 0, load generator on core 1"
else
  SRV=()
  CLI=()
  pinning="no pinning (fewer than 2 cores or no taskset)"
fi
TCK=$(getconf CLK_TCK)
say "== machine: $(nproc) cores, $(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1),"\
" kernel $(uname -r), $(cc --version 2>/dev/null | head -1)"
if git rev-parse --short HEAD >/dev/null 2>&1; then
  say "== source: commit $(git rev-parse --short HEAD), $(git status --porcelain -- src include examples | wc -l) file(s) of src/ include/ examples/ changed since"
fi
say "== $pinning; RLIMIT_NOFILE $(ulimit -Sn); $ROUNDS rounds of ${DURATION} s; $CONNS connections"
# Other processes skew every number: say so when the CPUs are not idle before we start.
busy_pct() { # CPU busy percentage of the whole machine over one second
  local a b
  read -r -a a </proc/stat
  sleep 1
  read -r -a b </proc/stat
  awk -v a="${a[*]}" -v b="${b[*]}" 'BEGIN { n = split(a, x); split(b, y); t = 0
    for (i = 2; i <= n && i <= 9; i++) t += y[i] - x[i]
    idle = y[5] - x[5] + y[6] - x[6]; printf "%d", (t > 0 ? (t - idle) * 100 / t : 0) }'
}
busy=$(busy_pct)
if [ "$busy" -gt 10 ]; then
  say "WARNING: the machine is ${busy}% busy before the benchmark: other processes will skew the results"
else
  say "== machine ${busy}% busy before the benchmark"
fi

# ---- helpers -----------------------------------------------------------------------------------------
wait_port() { # wait_port PORT PID: until something accepts on PORT (5 s at most)
  local i
  for i in $(seq 50); do
    if (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; then
      return 0
    fi
    kill -0 "$2" 2>/dev/null || break
    sleep 0.1
  done
  say "error: nothing listens on $HOST:$1"
  return 1
}

start_server() { # start_server NAME PORT command...: sets SERVER_PID
  local name=$1 port=$2
  shift 2
  "${SRV[@]}" "$@" >"$TMP/$name.log" 2>&1 &
  SERVER_PID=$!
  PIDS+=("$SERVER_PID")
  wait_port "$port" "$SERVER_PID" || { cat "$TMP/$name.log"; exit 1; }
}

stop_server() { # stop_server PID (and forget it: its number may be another process's later)
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
  local p keep=()
  for p in "${PIDS[@]}"; do
    [ "$p" = "$1" ] || keep+=("$p")
  done
  PIDS=("${keep[@]}")
}

cpu_ticks() { awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }
machine_ticks() { # "busy total" clock ticks of all CPUs since boot
  awk 'NR == 1 { t = 0; for (i = 2; i <= 9; i++) t += $i; print t - $5 - $6, t }' /proc/stat
}
child_ticks() { # CPU ticks of this shell's finished children (the load generators), from a
  # `times` taken in this shell itself (not in a $(...) subshell, whose children are its own)
  awk -v hz="$TCK" 'NR == 2 { s = 0; for (i = 1; i <= 2; i++) { split($i, a, "m"); sub(/s$/, "", a[2]);
    s += a[1] * 60 + a[2] } printf "%d", s * hz + 0.5 }' "$TMP/times"
}
# Around each run: the server's CPU ticks, and how much of the machine the other processes
# (neither the server nor the load generator) took: OTHER_PCT.  Usage: span_begin PID; ...; span_end PID
# ALSO_PID, when set, is a second server of the run (redis-server behind app-server --redis): its
# ticks are left out of OTHER_PCT and kept in ALSO_TICKS.
span_begin() {
  A0=0
  [ -n "${ALSO_PID:-}" ] && A0=$(cpu_ticks "$ALSO_PID")
  S0=$(cpu_ticks "$1")
  read -r M0B M0T <<<"$(machine_ticks)"
  times >"$TMP/times"
  C0=$(child_ticks)
}
span_end() {
  A1=0
  [ -n "${ALSO_PID:-}" ] && A1=$(cpu_ticks "$ALSO_PID")
  ALSO_TICKS=$((A1 - A0))
  S1=$(cpu_ticks "$1")
  read -r M1B M1T <<<"$(machine_ticks)"
  times >"$TMP/times"
  C1=$(child_ticks)
  SERVER_TICKS=$((S1 - S0))
  OTHER_PCT=$(awk -v b=$((M1B - M0B)) -v t=$((M1T - M0T)) -v s=$((S1 - S0 + ALSO_TICKS)) -v c=$((C1 - C0)) \
    'BEGIN { o = b - s - c; if (o < 0) o = 0; printf "%d", (t > 0 ? o * 100 / t : 0) }')
}
QUIET_BUDGET=${QUIET_BUDGET:-60} # seconds, in all, that the rounds may wait for a quiet machine
wait_quiet() { # before a round: wait (within the budget) until the machine is under 10% busy
  local b waited=0
  while :; do
    b=$(busy_pct)
    [ "$b" -lt 10 ] && break
    if [ "$QUIET_BUDGET" -le 0 ]; then
      say "  (machine ${b}% busy with other work; no waiting budget left)"
      return
    fi
    QUIET_BUDGET=$((QUIET_BUDGET - 1))
    waited=$((waited + 1))
  done
  [ "$waited" -gt 0 ] && say "  (waited ${waited} s for other work to calm down)"
  return 0
}
status_kb() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }
fd_count() { ls "/proc/$1/fd" | wc -l; }
field() { printf '%s\n' "$1" | tr ' ' '\n' | awk -F= -v k="$2" '$1 == k { print $2 }'; }

# One appmsg-bench run against a server: appends "KEY ROUND rps p50 p99 p999 max errors total
# cpu_s_per_100k" to $TMP/results.
bench_run() { # bench_run KEY ROUND PID appmsg-bench-args...  (LOADGEN=client-bench's path: that one)
  local key=$1 round=$2 pid=$3
  shift 3
  local out line rc=0
  span_begin "$pid"
  out=$("${CLI[@]}" "${LOADGEN:-$BENCH}" -h "$HOST" -c "$CONNS" -q "$@" 2>"$TMP/bench.err") || rc=$?
  span_end "$pid"
  line=$(printf '%s\n' "$out" | grep '^RESULT' | tail -1 || true)
  if [ -z "$line" ]; then
    say "error: appmsg-bench printed no RESULT (exit $rc):"
    cat "$TMP/bench.err"
    line="RESULT rps=0 p50_us=0 p99_us=0 p999_us=0 max_us=0 errors=1 requests=0 total=0"
  fi
  [ -s "$TMP/bench.err" ] && sed 's/^/    /' "$TMP/bench.err" | head -5
  local total cpu
  total=$(field "$line" total)
  cpu=$(awk -v t="$SERVER_TICKS" -v hz="$TCK" -v n="$total" \
    'BEGIN { if (n > 0) printf "%.4f", t / hz * 100000 / n; else print "nan" }')
  printf '%s %s %s %s %s %s %s %s %s %s %s\n' "$key" "$round" "$(field "$line" rps)" \
    "$(field "$line" p50_us)" "$(field "$line" p99_us)" "$(field "$line" p999_us)" \
    "$(field "$line" max_us)" "$(field "$line" errors)" "$total" "$cpu" "$OTHER_PCT" >>"$TMP/results"
  printf '  round %s %-12s %s  server CPU %s s/100k, others %s%%\n' "$round" "$key" "${line#RESULT }" \
    "$cpu" "$OTHER_PCT"
}

# bench_run with the appmsg command as the load generator ("appmsg bench ... --json", its figures
# made a RESULT line as appmsg-bench prints it).
bench_run_cli() { # bench_run_cli KEY ROUND PID PORT
  local key=$1 round=$2 pid=$3 port=$4 out line rc=0 total cpu
  span_begin "$pid"
  out=$("${CLI[@]}" "$CLITOOL" bench "$HOST:$port" search value=morpheus -c "$CONNS" -P 16 \
    -t "$DURATION" --warmup 1 --json 2>"$TMP/bench.err") || rc=$?
  span_end "$pid"
  line=$(printf '%s\n' "$out" | python3 -c 'import json, sys
d = json.load(sys.stdin); l = d["latency_ms"]
print("RESULT rps=%.1f p50_us=%.1f p99_us=%.1f p999_us=%.1f max_us=%.1f errors=%d requests=%d total=%d"
      % (d["rps"], l["p50"] * 1000, l["p99"] * 1000, l["p99.9"] * 1000, l["max"] * 1000,
         d["errors_total"] + d["mismatches"], d["requests"], d["requests"]))' 2>/dev/null || true)
  if [ -z "$line" ]; then
    say "error: appmsg bench printed no results (exit $rc):"
    cat "$TMP/bench.err"
    line="RESULT rps=0 p50_us=0 p99_us=0 p999_us=0 max_us=0 errors=1 requests=0 total=0"
  fi
  total=$(field "$line" total)
  cpu=$(awk -v t="$SERVER_TICKS" -v hz="$TCK" -v n="$total" \
    'BEGIN { if (n > 0) printf "%.4f", t / hz * 100000 / n; else print "nan" }')
  printf '%s %s %s %s %s %s %s %s %s %s %s\n' "$key" "$round" "$(field "$line" rps)" \
    "$(field "$line" p50_us)" "$(field "$line" p99_us)" "$(field "$line" p999_us)" \
    "$(field "$line" max_us)" "$(field "$line" errors)" "$total" "$cpu" "$OTHER_PCT" >>"$TMP/results"
  printf '  round %s %-12s %s  server CPU %s s/100k, others %s%%\n' "$round" "$key" "${line#RESULT }" \
    "$cpu" "$OTHER_PCT"
}

# bench_run on app-server --redis, with redis-server's CPU per request in a row of its own
# ("KEY.redis": no latencies).
bench_run_redis() { # bench_run_redis KEY ROUND PID appmsg-bench-args...
  local key=$1 round=$2 total cpu
  ALSO_PID=$REDIS_PID bench_run "$@"
  total=$(awk -v k="$key" -v r="$round" '$1 == k && $2 == r { t = $9 } END { print t + 0 }' \
    "$TMP/results")
  cpu=$(awk -v t="$ALSO_TICKS" -v hz="$TCK" -v n="$total" \
    'BEGIN { if (n > 0) printf "%.4f", t / hz * 100000 / n; else print "nan" }')
  printf '%s %s - - - - - 0 %s %s 0\n' "$key.redis" "$round" "$total" "$cpu" \
    >>"$TMP/results"
  printf '  round %s %-9s redis-server behind it: CPU %s s/100k\n' "$round" "$key" "$cpu"
}

# redis-benchmark has no duration option: each scenario gets an -n for about DURATION seconds
# from a short calibration run (redis_calibrate KEY N0 args...: sets RN_KEY).
redis_calibrate() {
  local key=$1 n0=$2 out rps
  shift 2
  out=$(timeout 120 "${CLI[@]}" redis-benchmark -h "$HOST" -c "$CONNS" -t get -n "$n0" --csv "$@" \
    2>/dev/null | grep '^"GET"' | tr -d '"' | cut -d, -f2 || true)
  rps=${out:-0}
  local var=${key//./_}
  printf -v "RN_${var//-/_}" '%s' "$(awk -v r="$rps" -v d="$DURATION" -v m="$n0" \
    'BEGIN { n = int(r * d); if (n < m) n = m; print n }')"
  say "== redis calibration $key: ${out:-?} GET/s"
}
redis_run() { # redis_run KEY ROUND PID redis-benchmark-args...
  local key=$1 round=$2 pid=$3 out line rc=0 nvar
  shift 3
  nvar=${key//./_}
  nvar="RN_${nvar//-/_}"
  local n=${!nvar}
  span_begin "$pid"
  out=$(timeout $((DURATION * 6 + 60)) "${CLI[@]}" redis-benchmark -h "$HOST" -c "$CONNS" -t get \
    -n "$n" --csv "$@" 2>"$TMP/redis-bench.err") || rc=$?
  span_end "$pid"
  line=$(printf '%s\n' "$out" | grep '^"GET"' | tail -1 | tr -d '"' || true)
  local rps p50 p99 max errors=0
  if [ -z "$line" ] || [ "$rc" -ne 0 ]; then
    say "error: redis-benchmark failed (exit $rc)"
    grep -v -i 'warning' "$TMP/redis-bench.err" | head -5
    rps=0 p50=0 p99=0 max=0 errors=1
  else # test,rps,avg_ms,min_ms,p50_ms,p95_ms,p99_ms,max_ms
    IFS=, read -r _ rps _ _ p50 _ p99 max <<<"$line"
    p50=$(awk -v v="$p50" 'BEGIN { printf "%.1f", v * 1000 }')
    p99=$(awk -v v="$p99" 'BEGIN { printf "%.1f", v * 1000 }')
    max=$(awk -v v="$max" 'BEGIN { printf "%.1f", v * 1000 }')
  fi
  local cpu
  cpu=$(awk -v t="$SERVER_TICKS" -v hz="$TCK" -v n="$n" \
    'BEGIN { if (n > 0) printf "%.4f", t / hz * 100000 / n; else print "nan" }')
  printf '%s %s %s %s %s - %s %s %s %s %s\n' "$key" "$round" "$rps" "$p50" "$p99" "$max" "$errors" \
    "$n" "$cpu" "$OTHER_PCT" >>"$TMP/results"
  printf '  round %s %-12s rps=%s p50_us=%s p99_us=%s max_us=%s (redis-benchmark -n %s)  server CPU %s s/100k, others %s%%\n' \
    "$round" "$key" "$rps" "$p50" "$p99" "$max" "$n" "$cpu" "$OTHER_PCT"
}

# ---- load rounds ---------------------------------------------------------------------------------------
A_PORT=$PORT_BASE
B_PORT=$((PORT_BASE + 1))
R_PORT=$((PORT_BASE + 2))
T_PORT=$((PORT_BASE + 3))
AT_PORT=$((PORT_BASE + 5)) # app-server over TLS
RT_PORT=$((PORT_BASE + 4)) # redis's TLS port
AR_PORT=$((PORT_BASE + 6)) # app-server --redis
T1_PORT=$((PORT_BASE + 7)) # app-server --threads 1, unpinned
NM_PORT=$((PORT_BASE + 8)) # app-server --no-measure (pinned, as app-server)
: >"$TMP/results"
TLS_CLIENT=(--tls --tls-ca "$CERTS/ca.pem" --tls-name localhost)
REDIS_TLS=(--tls --cacert "$CERTS/ca.pem" --sni localhost)

start_server app-server "$A_PORT" "$APP" "$HOST" "$A_PORT"
APP_PID=$SERVER_PID
start_server baseline "$B_PORT" "$BASE" "$HOST" "$B_PORT"
BASE_PID=$SERVER_PID
start_server app-server-nm "$NM_PORT" "$APP" --no-measure "$HOST" "$NM_PORT"
NM_PID=$SERVER_PID
# Two threads: not pinned (taskset would put both on core 0).
SRV_SAVED=("${SRV[@]}")
SRV=()
start_server app-server-x2 "$T_PORT" "$APP" --threads 2 "$HOST" "$T_PORT"
APP2_PID=$SERVER_PID
start_server app-server-x1 "$T1_PORT" "$APP" --threads 1 "$HOST" "$T1_PORT"
APP1_PID=$SERVER_PID
SRV=("${SRV_SAVED[@]}")
APPT_PID=
if [ "$app_tls" = 1 ]; then
  start_server app-server-tls "$AT_PORT" "$APP" --tls-cert "$CERTS/server.pem" \
    --tls-key "$CERTS/server.key" "$HOST" "$AT_PORT"
  APPT_PID=$SERVER_PID
fi
REDIS_PID=
APPR_PID=
redis_tls=0
if [ "$have_redis" = 1 ]; then
  redis_args=(--port "$R_PORT" --bind "$HOST" --save '' --appendonly no --protected-mode yes
    --maxclients $((IDLE_CONNS + 100)))
  if [ "$TLS" = 1 ]; then # the same server, with its TLS port beside the plain one
    "${SRV[@]}" redis-server "${redis_args[@]}" --tls-port "$RT_PORT" --tls-cert-file \
      "$CERTS/server.pem" --tls-key-file "$CERTS/server.key" --tls-ca-cert-file "$CERTS/ca.pem" \
      --tls-auth-clients no >"$TMP/redis.log" 2>&1 &
    REDIS_PID=$!
    PIDS+=("$REDIS_PID")
    if wait_port "$R_PORT" "$REDIS_PID" 2>/dev/null; then
      redis_tls=1
    else
      say "note: this redis-server has no TLS: its TLS rows are skipped"
      REDIS_PID=
    fi
  fi
  if [ -z "$REDIS_PID" ]; then
    start_server redis "$R_PORT" redis-server "${redis_args[@]}"
    REDIS_PID=$SERVER_PID
  fi
  redis-cli -h "$HOST" -p "$R_PORT" set key:__rand_int__ xxx >/dev/null
  redis_calibrate p16.redis 100000 -p "$R_PORT" -P 16
  if [ "$TLS" = 1 ]; then
    redis_calibrate p1.redis 20000 -p "$R_PORT" -P 1
    redis_calibrate nc.redis 5000 -p "$R_PORT" -k 0
  fi
  if [ "$redis_tls" = 1 ]; then
    redis_calibrate p1.redis-tls 20000 -p "$RT_PORT" "${REDIS_TLS[@]}" -P 1
    redis_calibrate p16.redis-tls 50000 -p "$RT_PORT" "${REDIS_TLS[@]}" -P 16
    redis_calibrate nc.redis-tls 1000 -p "$RT_PORT" "${REDIS_TLS[@]}" -k 0
  fi
  if [ "$have_hiredis" = 1 ]; then
    # The answer appmsg-bench checks, in Redis; app-server --redis beside redis-server on core 0.
    redis-cli -h "$HOST" -p "$R_PORT" set morpheus "Follow the white rabbit. $(printf '\360\237\220\260')" \
      >/dev/null
    start_server app-server-redis "$AR_PORT" "$APP" --redis "$HOST:$R_PORT" "$HOST" "$AR_PORT"
    APPR_PID=$SERVER_PID
  else
    say "note: no hiredis (libhiredis-dev): the app-server --redis row is skipped"
  fi
fi

P1=(--workload search -P 1 --duration "$DURATION" --warmup 20000)
P16=(--workload search -P 16 --duration "$DURATION" --warmup 100000)
NC=(--workload search --new-conn --duration "$DURATION" --warmup 2000)
say "== load: $ROUNDS rounds"
run_who() { # run_who SCENARIO WHO ROUND
  local sc=$1 who=$2 round=$3 args
  case $sc in
  p1) args=("${P1[@]}") ;;
  p16) args=("${P16[@]}") ;;
  nc) args=("${NC[@]}") ;;
  esac
  case $who in
  app) bench_run "$sc.app" "$round" "$APP_PID" -p "$A_PORT" "${args[@]}" ;;
  base) bench_run "$sc.base" "$round" "$BASE_PID" -p "$B_PORT" "${args[@]/search/echo}" ;;
  app-tls)
    [ -n "$APPT_PID" ] && bench_run "$sc.app-tls" "$round" "$APPT_PID" -p "$AT_PORT" \
      "${args[@]}" "${TLS_CLIENT[@]}"
    ;;
  redis)
    if [ "$have_redis" = 1 ]; then
      case $sc in
      p1) [ "$TLS" = 1 ] && redis_run p1.redis "$round" "$REDIS_PID" -p "$R_PORT" -P 1 ;;
      p16) redis_run p16.redis "$round" "$REDIS_PID" -p "$R_PORT" -P 16 ;;
      nc) [ "$TLS" = 1 ] && redis_run nc.redis "$round" "$REDIS_PID" -p "$R_PORT" -k 0 ;;
      esac
    fi
    ;;
  redis-tls)
    if [ "$redis_tls" = 1 ]; then
      case $sc in
      p1) redis_run p1.redis-tls "$round" "$REDIS_PID" -p "$RT_PORT" "${REDIS_TLS[@]}" -P 1 ;;
      p16) redis_run p16.redis-tls "$round" "$REDIS_PID" -p "$RT_PORT" "${REDIS_TLS[@]}" -P 16 ;;
      nc) redis_run nc.redis-tls "$round" "$REDIS_PID" -p "$RT_PORT" "${REDIS_TLS[@]}" -k 0 ;;
      esac
    fi
    ;;
  esac
  return 0
}
for round in $(seq "$ROUNDS"); do
  wait_quiet
  if [ $((round % 2)) -eq 1 ]; then
    order="app base app-tls redis redis-tls"
  else
    order="redis-tls redis app-tls base app"
  fi
  for sc in p1 p16 nc; do
    for who in $order; do
      run_who "$sc" "$who" "$round"
    done
    if [ "$sc" = p16 ]; then
      LOADGEN=$LIBBENCH bench_run p16.lib "$round" "$APP_PID" -p "$A_PORT" -P 16 \
        --duration "$DURATION" --warmup 100000
      bench_run_cli p16.cli "$round" "$APP_PID" "$A_PORT"
      bench_run p16.nm "$round" "$NM_PID" -p "$NM_PORT" "${P16[@]}"
      bench_run p16.x1 "$round" "$APP1_PID" -p "$T1_PORT" "${P16[@]}"
      bench_run p16.x2 "$round" "$APP2_PID" -p "$T_PORT" "${P16[@]}"
      if [ -n "$APPR_PID" ]; then
        bench_run_redis p16.appr "$round" "$APPR_PID" -p "$AR_PORT" "${P16[@]}"
      fi
    fi
  done
done

# ---- the same load through HAProxy -------------------------------------------------------------------
# One HAProxy, TCP mode as in deploy/haproxy/appmsg.cfg (same timeouts, leastconn, retries and
# redispatch; no health checks and no log lines, which cost nothing per request), one frontend
# for app-server and one for the baseline.  It runs on the server's core, one thread: the rows
# "via HAProxy" against the direct ones show what the proxy costs the machine per request, and
# app-server against the baseline through it, how much of that loss is appmsg's.
if [ "$HAPROXY" = 1 ]; then
  HA_APP_PORT=$((PORT_BASE + 20))
  HA_BASE_PORT=$((PORT_BASE + 21))
  cat >"$TMP/haproxy.cfg" <<HAEOF
global
    nbthread 1
defaults
    mode tcp
    timeout connect 2s
    timeout client 65s
    timeout server 65s
    timeout client-fin 10s
    timeout server-fin 10s
    retries 3
    option redispatch 1
frontend app
    bind $HOST:$HA_APP_PORT
    default_backend app
backend app
    balance leastconn
    server app1 $HOST:$A_PORT
frontend base
    bind $HOST:$HA_BASE_PORT
    default_backend base
backend base
    balance leastconn
    server base1 $HOST:$B_PORT
HAEOF
  start_server haproxy "$HA_APP_PORT" "$HAPROXY_BIN" -db -f "$TMP/haproxy.cfg"
  HA_PID=$SERVER_PID
  : >"$TMP/haproxy_cpu"
  ha_run() { # ha_run KEY ROUND SERVER_PID appmsg-bench-args...: bench_run, plus HAProxy's CPU
    local h0 h1 adj total
    h0=$(cpu_ticks "$HA_PID")
    bench_run "$@"
    h1=$(cpu_ticks "$HA_PID")
    # HAProxy is part of the setup, not "other processes": take its share out of that column.
    adj=$(awk -v h=$((h1 - h0)) -v t=$((M1T - M0T)) 'BEGIN { printf "%d", (t > 0 ? h * 100 / t : 0) }')
    awk -v a="$adj" 'NR > 1 { print prev } { prev = $0 } END { n = split(prev, f, " ")
      f[11] = f[11] - a < 0 ? 0 : f[11] - a; s = f[1]; for (i = 2; i <= n; i++) s = s " " f[i]
      print s }' "$TMP/results" >"$TMP/results.new" && mv "$TMP/results.new" "$TMP/results"
    total=$(tail -1 "$TMP/results" | awk '{ print $9 }')
    printf '%s %s %s\n' "$1" "$2" "$(awk -v t=$((h1 - h0)) -v hz="$TCK" -v n="$total" \
      'BEGIN { if (n > 0) printf "%.4f", t / hz * 100000 / n; else print "nan" }')" >>"$TMP/haproxy_cpu"
    printf '  %28s HAProxy CPU %s s/100k; others without HAProxy %s%%\n' "" \
      "$(tail -1 "$TMP/haproxy_cpu" | awk '{ print $3 }')" "$(tail -1 "$TMP/results" | awk '{ print $11 }')"
  }
  say "== through HAProxy ($("$HAPROXY_BIN" -v | awk 'NR == 1 { print $3 }')): $ROUNDS rounds"
  for round in $(seq "$ROUNDS"); do
    wait_quiet
    if [ $((round % 2)) -eq 1 ]; then order="app base"; else order="base app"; fi
    for w in p1 p16 nc; do
      case $w in
        p1) args=("${P1[@]}") ;;
        p16) args=("${P16[@]}") ;;
        nc) args=("${NC[@]}") ;;
      esac
      for who in $order; do
        if [ "$who" = app ]; then
          ha_run "$w.app-haproxy" "$round" "$APP_PID" -p "$HA_APP_PORT" "${args[@]}"
        else
          ha_run "$w.base-haproxy" "$round" "$BASE_PID" -p "$HA_BASE_PORT" "${args[@]/search/echo}"
        fi
      done
    done
  done
  stop_server "$HA_PID"
fi

if [ "$PERF" = 1 ]; then
  mkdir -p "$BUILD/perf"
  if perf stat -e cpu-clock true >/dev/null 2>&1; then
    for p in 1 16; do
      say "== perf: app-server at pipeline $p -> $BUILD/perf/app-p$p.txt"
      perf record -q -e cpu-clock -g -p "$APP_PID" -o "$BUILD/perf/app-p$p.data" \
        -- sleep "$DURATION" >/dev/null 2>&1 &
      perf_pid=$!
      "${CLI[@]}" "$BENCH" -h "$HOST" -p "$A_PORT" -c "$CONNS" -q -P "$p" \
        --duration "$((DURATION + 1))" >/dev/null 2>&1 || true
      wait "$perf_pid" || true
      { # flat: where the samples are; then inclusive: which system calls and functions
        # (user-space stacks need frame pointers or --call-graph dwarf; kernel stacks are fine)
        echo "## self (flat)"
        perf report -i "$BUILD/perf/app-p$p.data" --stdio --no-children --sort dso,symbol -g none \
          2>/dev/null | grep -v '^#' | grep -v '^$' | head -60
        echo "## inclusive (children)"
        perf report -i "$BUILD/perf/app-p$p.data" --stdio --children --sort symbol -g none \
          2>/dev/null | grep -v '^#' | grep -v '^$' | head -60
      } >"$BUILD/perf/app-p$p.txt" || true
    done
  else
    say "note: perf cannot sample here (perf stat -e cpu-clock failed)"
  fi
fi

stop_server "$APP2_PID"
stop_server "$APP1_PID"
stop_server "$NM_PID"
[ -n "${APPR_PID:-}" ] && stop_server "$APPR_PID"
APPT_HWM=-
[ -n "$APPT_PID" ] && APPT_HWM=$(status_kb "$APPT_PID" VmHWM)
[ -n "$APPT_PID" ] && stop_server "$APPT_PID"
APP_HWM=$(status_kb "$APP_PID" VmHWM)
BASE_HWM=$(status_kb "$BASE_PID" VmHWM)
REDIS_HWM=-
[ -n "$REDIS_PID" ] && REDIS_HWM=$(status_kb "$REDIS_PID" VmHWM)
stop_server "$APP_PID"
stop_server "$BASE_PID"
[ -n "$REDIS_PID" ] && stop_server "$REDIS_PID"

# ---- idle connections -------------------------------------------------------------------------------------
: >"$TMP/idle"
IDLE_N=$IDLE_CONNS
IDLE_ARGS=()
idle_run() { # idle_run NAME PORT command...  (IDLE_N connections, appmsg-bench IDLE_ARGS)
  local name=$1 port=$2
  shift 2
  start_server "idle-$name" "$port" "$@"
  local pid=$SERVER_PID rss0 rss1 fds0 holder i per held
  sleep 0.3
  rss0=$(status_kb "$pid" VmRSS)
  fds0=$(fd_count "$pid")
  "${CLI[@]}" "$BENCH" -h "$HOST" -p "$port" --idle "$IDLE_N" --hold 120 ${IDLE_ARGS[@]+"${IDLE_ARGS[@]}"} \
    >"$TMP/holder.out" 2>&1 &
  holder=$!
  PIDS+=("$holder")
  for i in $(seq 600); do # the client has them all (60 s at most)
    grep -q '^IDLE connected' "$TMP/holder.out" && break
    kill -0 "$holder" 2>/dev/null || break
    sleep 0.1
  done
  for i in $(seq 150); do # the server has accepted them all (15 s at most)
    [ "$(fd_count "$pid")" -ge $((fds0 + IDLE_N)) ] && break
    sleep 0.1
  done
  sleep 1
  rss1=$(status_kb "$pid" VmRSS)
  local fds1
  fds1=$(fd_count "$pid")
  stop_server "$holder" # (SIGTERM: it prints what it held, then exits)
  held=$(grep '^IDLE held' "$TMP/holder.out" | sed 's/^IDLE //' || true)
  per=$(awk -v a="$rss0" -v b="$rss1" -v n="$IDLE_N" 'BEGIN { printf "%.0f", (b - a) * 1024 / n }')
  printf '%s %s %s %s %s\n' "$name" "$rss0" "$rss1" "$per" "$((fds1 - fds0))" >>"$TMP/idle"
  printf '  idle %-14s RSS %s kB -> %s kB with %s connections open (%s): %s bytes each\n' \
    "$name" "$rss0" "$rss1" "$((fds1 - fds0))" "${held:-?}" "$per"
  stop_server "$pid"
}
say "== idle connections: $IDLE_CONNS to a fresh server each"
idle_run app-server $((PORT_BASE + 10)) "$APP" "$HOST" $((PORT_BASE + 10))
idle_run baseline $((PORT_BASE + 11)) "$BASE" "$HOST" $((PORT_BASE + 11))
if [ "$have_redis" = 1 ]; then
  idle_run redis $((PORT_BASE + 12)) redis-server --port $((PORT_BASE + 12)) --bind "$HOST" \
    --save '' --appendonly no --protected-mode yes --maxclients $((IDLE_CONNS + 100))
fi
if [ "$app_tls" = 1 ] || [ "$redis_tls" = 1 ]; then
  say "== idle TLS connections: $IDLE_TLS_CONNS (handshake done) to a fresh server each"
  IDLE_N=$IDLE_TLS_CONNS
  IDLE_ARGS=("${TLS_CLIENT[@]}")
  if [ "$app_tls" = 1 ]; then
    idle_run app-server-tls $((PORT_BASE + 13)) "$APP" --tls-cert "$CERTS/server.pem" \
      --tls-key "$CERTS/server.key" "$HOST" $((PORT_BASE + 13))
  fi
  if [ "$redis_tls" = 1 ]; then
    idle_run redis-tls $((PORT_BASE + 15)) redis-server --port 0 --tls-port $((PORT_BASE + 15)) \
      --tls-cert-file "$CERTS/server.pem" --tls-key-file "$CERTS/server.key" \
      --tls-ca-cert-file "$CERTS/ca.pem" --tls-auth-clients no --bind "$HOST" --save '' \
      --appendonly no --protected-mode yes --maxclients $((IDLE_CONNS + 100))
  fi
fi

# ---- the table -----------------------------------------------------------------------------------------------
median() { # median KEY COLUMN (3 rps, 4 p50, 5 p99, 6 p999, 7 max, 10 cpu)
  awk -v k="$1" -v c="$2" '$1 == k { print $c }' "$TMP/results" | sort -g |
    awk '{ a[NR] = $1 } END { if (NR == 0 || a[1] == "-") { print "-"; exit }
           if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}
errsum() { awk -v k="$1" '$1 == k { s += $8 } END { print s + 0 }' "$TMP/results"; }
row() { # row LABEL SERVER KEY
  printf '%-22s %-13s %10s %8s %8s %9s %8s %10s %6s\n' "$1" "$2" "$(median "$3" 3)" \
    "$(median "$3" 4)" "$(median "$3" 5)" "$(median "$3" 6)" "$(median "$3" 7)" \
    "$(median "$3" 10)" "$(errsum "$3")"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 > 0 && a != "-") printf "%.2f", a / b; else print "-" }'; }
ratio_row() { # ratio_row LABEL KEY_A KEY_B
  printf '%-22s %-13s %10s %8s %8s %9s %8s %10s\n' "" "$1" "$(ratio "$(median "$2" 3)" "$(median "$3" 3)")" \
    "$(ratio "$(median "$2" 4)" "$(median "$3" 4)")" "$(ratio "$(median "$2" 5)" "$(median "$3" 5)")" \
    "$(ratio "$(median "$2" 6)" "$(median "$3" 6)")" "$(ratio "$(median "$2" 7)" "$(median "$3" 7)")" \
    "$(ratio "$(median "$2" 10)" "$(median "$3" 10)")"
}

say ""
say "== medians of $ROUNDS rounds ($DURATION s each, $CONNS connections; $pinning)"
printf '%-22s %-13s %10s %8s %8s %9s %8s %10s %6s\n' scenario server "req/s" "p50 us" "p99 us" \
  "p99.9 us" "max us" "CPU s/100k" errors
has() { awk -v k="$1" '$1 == k { f = 1 } END { exit !f }' "$TMP/results"; }
tls_rows() { # tls_rows SCENARIO: the TLS rows and ratios of a scenario, where there are some
  has "$1.app-tls" && row "" "app TLS" "$1.app-tls"
  has "$1.redis" && [ "$1" != p16 ] && row "" "redis GET" "$1.redis"
  has "$1.redis-tls" && row "" "redis TLS" "$1.redis-tls"
  has "$1.app-tls" && ratio_row "app TLS/pl" "$1.app-tls" "$1.app"
  has "$1.redis-tls" && ratio_row "redis TLS/pl" "$1.redis-tls" "$1.redis"
  has "$1.app-tls" && has "$1.redis-tls" && ratio_row "TLS app/redis" "$1.app-tls" "$1.redis-tls"
  return 0
}
row "P1 persistent" app-server p1.app
row "" baseline p1.base
ratio_row app/base p1.app p1.base
tls_rows p1
row "P16 persistent" app-server p16.app
row "" baseline p16.base
[ "$have_redis" = 1 ] && row "" "redis GET" p16.redis
ratio_row app/base p16.app p16.base
[ "$have_redis" = 1 ] && ratio_row app/redis p16.app p16.redis
if [ -n "${APPR_PID:-}" ]; then
  row "P16 from Redis" "app --redis" p16.appr
  row "" "its redis" p16.appr.redis
  ratio_row app/redis p16.appr p16.redis
fi
row "P16 via client.h" app-server p16.lib
ratio_row lib/bench p16.lib p16.app
row "P16 via appmsg bench" app-server p16.cli
ratio_row cli/bench p16.cli p16.app # appmsg bench / appmsg-bench
row "P16 --no-measure" app-server p16.nm
ratio_row "on/off" p16.app p16.nm # measured / not measured: its CPU column is the cost
row "P16 --threads 2" app-server p16.x2
row "" "--threads 1" p16.x1
ratio_row x2/x1 p16.x2 p16.x1
tls_rows p16
row "new conn per request" app-server nc.app
row "" baseline nc.base
ratio_row app/base nc.app nc.base
tls_rows nc
if [ "$HAPROXY" = 1 ]; then
  # Through HAProxy: "app v/dir" and "base v/dir" are each server through HAProxy against
  # itself directly; "app/base" is app-server against the baseline, both through HAProxy.
  ha_cpu() { # ha_cpu KEY: median HAProxy CPU s/100k
    awk -v k="$1" '$1 == k { print $3 }' "$TMP/haproxy_cpu" | sort -g |
      awk '{ a[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print a[(NR + 1) / 2];
             else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
  }
  for w in p1 p16 nc; do
    case $w in
      p1) label="P1 via HAProxy" ;;
      p16) label="P16 via HAProxy" ;;
      nc) label="new conn via HAProxy" ;;
    esac
    row "$label" app-server "$w.app-haproxy"
    row "" baseline "$w.base-haproxy"
    ratio_row "app v/dir" "$w.app-haproxy" "$w.app"
    ratio_row "base v/dir" "$w.base-haproxy" "$w.base"
    ratio_row "app/base" "$w.app-haproxy" "$w.base-haproxy"
    printf '%-22s %-11s HAProxy CPU s/100k: %s with app-server, %s with the baseline\n' "" "" \
      "$(ha_cpu "$w.app-haproxy")" "$(ha_cpu "$w.base-haproxy")"
  done
fi
say ""
say "peak RSS (VmHWM) after the load rounds: app-server $APP_HWM kB, app-server TLS $APPT_HWM kB, baseline $BASE_HWM kB, redis $REDIS_HWM kB"
awk '{ printf "idle: %-14s %6s bytes of RSS per idle connection (%s kB -> %s kB, %s fds)\n", $1, $4, $2, $3, $5 }' "$TMP/idle"

# ---- the targets --------------------------------------------------------------------------------------------------
say ""
say "== targets"
target() { # target TEXT VALUE OP LIMIT
  awk -v t="$1" -v v="$2" -v op="$3" -v lim="$4" 'BEGIN {
    if (v == "-" || v == "") { printf "  %-58s %8s   n/a\n", t, "-"; exit }
    ok = (op == ">=") ? (v + 0 >= lim + 0) : (v + 0 <= lim + 0)
    if (ok) printf "  %-58s %8s   MET\n", t, v
    else if (op == ">=") printf "  %-58s %8s   MISSED by %.0f%%\n", t, v, (lim - v) / lim * 100
    else printf "  %-58s %8s   MISSED by %.0f%%\n", t, v, (v - lim) / lim * 100
  }'
}
target "P1 req/s app-server/baseline >= 0.95" "$(ratio "$(median p1.app 3)" "$(median p1.base 3)")" ">=" 0.95
target "P16 req/s app-server/baseline >= 0.5" "$(ratio "$(median p16.app 3)" "$(median p16.base 3)")" ">=" 0.5
target "P16 server CPU per request app-server/baseline <= 1.3" \
  "$(ratio "$(median p16.app 10)" "$(median p16.base 10)")" "<=" 1.3
target "P16 req/s through client.h / appmsg-bench's client >= 0.8" \
  "$(ratio "$(median p16.lib 3)" "$(median p16.app 3)")" ">=" 0.8
target "P16 req/s appmsg bench / appmsg-bench >= 1.0" \
  "$(ratio "$(median p16.cli 3)" "$(median p16.app 3)")" ">=" 1.0
target "P16 server CPU per request measured / --no-measure <= 1.03" \
  "$(ratio "$(median p16.app 10)" "$(median p16.nm 10)")" "<=" 1.03
target "P16 server CPU per request --threads 2 / --threads 1 <= 1.1" \
  "$(ratio "$(median p16.x2 10)" "$(median p16.x1 10)")" "<=" 1.1
if [ -n "${APPR_PID:-}" ]; then
  target "P16 req/s app-server --redis / redis GET >= 0.4" \
    "$(ratio "$(median p16.appr 3)" "$(median p16.redis 3)")" ">=" 0.4
fi
if [ "$have_redis" = 1 ]; then
  target "P16 req/s app-server/redis GET >= 1.0" "$(ratio "$(median p16.app 3)" "$(median p16.redis 3)")" ">=" 1.0
fi
target "new conn: CPU per request app-server/baseline <= 1.3" \
  "$(ratio "$(median nc.app 10)" "$(median nc.base 10)")" "<=" 1.3
target "idle: app-server bytes per connection <= 512" \
  "$(awk '$1 == "app-server" { print $4 }' "$TMP/idle")" "<=" 512
tls_ratio() { # tls_ratio SCENARIO COLUMN: (app TLS/plain) / (redis TLS/plain)
  awk -v a="$(median "$1.app-tls" "$2")" -v b="$(median "$1.app" "$2")" \
    -v c="$(median "$1.redis-tls" "$2")" -v d="$(median "$1.redis" "$2")" \
    'BEGIN { if (a == "-" || c == "-" || b + 0 <= 0 || d + 0 <= 0 || c + 0 <= 0) print "-";
             else printf "%.2f", (a / b) / (c / d) }'
}
if has p1.app-tls && has p1.redis-tls; then
  target "P1 TLS/plain req/s: app-server's / redis's >= 1.0" "$(tls_ratio p1 3)" ">=" 1.0
  target "P16 TLS/plain req/s: app-server's / redis's >= 1.0" "$(tls_ratio p16 3)" ">=" 1.0
  target "new conn TLS: server CPU per handshake app/redis <= 1.0" \
    "$(ratio "$(median nc.app-tls 10)" "$(median nc.redis-tls 10)")" "<=" 1.0
fi
total_errors=$(awk '{ s += $8 } END { print s + 0 }' "$TMP/results")
noisy=$(awk '$11 + 0 > 10 { n++ } END { print n + 0 }' "$TMP/results")
if [ "$noisy" -gt 0 ]; then
  say "WARNING: in $noisy of $(wc -l <"$TMP/results") runs other processes took more than 10% of the machine's CPU: those numbers are skewed"
else
  say "other processes took at most 10% of the machine's CPU in every run"
fi
say ""
say "errors in all runs: $total_errors"

printf 'bench/run.sh %s%s: medians of %s rounds of %s s, %s connections\n' "$(date +%Y-%m-%d)" \
  "$(git rev-parse --short HEAD 2>/dev/null | sed 's/^/, commit /')" "$ROUNDS" "$DURATION" "$CONNS" \
  >"$TMP/results.title"
cp "$TMP/results" "$BUILD/results.txt"
cp "$TMP/results.title" "$BUILD/results.title"
if [ "$have_gnuplot" = 1 ]; then
  if draw_results bench/results.png 2>"$TMP/gnuplot.err"; then
    say "== picture: bench/results.png"
  else
    say "note: gnuplot failed, no picture:"
    head -5 "$TMP/gnuplot.err"
  fi
fi
