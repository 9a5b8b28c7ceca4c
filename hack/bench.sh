#!/usr/bin/env bash
# Side-by-side throughput and latency of redis-benchmark against: one shard directly, twemproxy
# (nutcracker, ketama) over two shards, and the agent over the same two shards with L1 off and on,
# at its default of two threads and at --procs=1 (agent1-* rows): GETs and SETs of random keys,
# MGETs of 10 random keys, GETs and SETs of hot keys, and GETs by clients that track keys
# (CLIENT TRACKING, the misses of an application's own cache: *-trk rows).
# Everything runs on loopback; all processes are stopped on exit.
#
# On a shared VM one pass moves by 0.1-0.2 in any ratio, so every row runs ROUNDS times, the
# targets alternating within a round; a ratio is taken within each round (side by side) and
# reported as the median and the range over the rounds.
#
#   ROUNDS=3 hack/bench.sh [requests]      (default 3 rounds of 100000 requests per row)
#   BASELINE=<git rev> hack/bench.sh       (adds base-l1-off/on: the agent built at that revision,
#                                           measured in the same rounds, and the ratios to it)
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-100000}" ROUNDS="${ROUNDS:-3}"
CLIENTS=50 SIZE=64 KEYSPACE=100000 HOT_KEYS=100
for tool in redis-benchmark nutcracker; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is missing (apt-get install redis-tools nutcracker)" >&2; exit 1; }
done
# Shards are valkey-server built from source (hack/valkey-bins.sh; redis-server where it cannot be).
SHARD_SERVER="$(hack/valkey-bins.sh)"
echo "bench: shards run $("$SHARD_SERVER" --version | head -1)"
work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

S0=17101 S1=17102 TW=17110 AG0=17120 AG1=17121 AG2=17122 AG3=17123
# A leftover server on one of these ports would silently be measured instead of ours.
BA0=17124 BA1=17125
for port in $S0 $S1 $TW 17111 $AG0 $AG1 $AG2 $AG3 $BA0 $BA1 17130 17131 17132 17133 17134 17135; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "bench: port $port is already in use; stop what listens there first" >&2; exit 1
  fi
done
declare -A PID # the process serving each port, whose CPU time a row reports
for port in $S0 $S1; do
  "$SHARD_SERVER" --port "$port" --bind 127.0.0.1 --save "" --appendonly no --loglevel warning --dir "$work" >/dev/null &
  pids+=($!) PID[$port]=$!
done
cat > "$work/nutcracker.yml" <<YML
pool:
  listen: 127.0.0.1:$TW
  hash: fnv1a_64
  distribution: ketama
  redis: true
  auto_eject_hosts: false
  servers:
   - 127.0.0.1:$S0:1 shard-0
   - 127.0.0.1:$S1:1 shard-1
YML
nutcracker -c "$work/nutcracker.yml" -s 17111 -o "$work/nutcracker.log" &
pids+=($!) PID[$TW]=$!
go build -o "$work/agent" ./cmd/agent
shards="shard-0=127.0.0.1:$S0,shard-1=127.0.0.1:$S1"
"$work/agent" --shards "$shards" --l1=false --listen 127.0.0.1:$AG0 --http-listen 127.0.0.1:17130 2>"$work/agent0.log" &
pids+=($!) PID[$AG0]=$!
"$work/agent" --shards "$shards" --l1=true --listen 127.0.0.1:$AG1 --http-listen 127.0.0.1:17131 2>"$work/agent1.log" &
pids+=($!) PID[$AG1]=$!
"$work/agent" --shards "$shards" --l1=false --procs=1 --listen 127.0.0.1:$AG2 --http-listen 127.0.0.1:17132 2>"$work/agent2.log" &
pids+=($!) PID[$AG2]=$!
"$work/agent" --shards "$shards" --l1=true --procs=1 --listen 127.0.0.1:$AG3 --http-listen 127.0.0.1:17133 2>"$work/agent3.log" &
pids+=($!) PID[$AG3]=$!
if [ -n "${BASELINE:-}" ]; then # the same agent flags, the code at BASELINE
  mkdir "$work/base"
  git archive "$BASELINE" | tar -x -C "$work/base"
  (cd "$work/base" && go build -o "$work/agent-base" ./cmd/agent)
  echo "bench: base-* rows run the agent at $(git rev-parse --short "$BASELINE")"
  "$work/agent-base" --shards "$shards" --l1=false --listen 127.0.0.1:$BA0 --http-listen 127.0.0.1:17134 2>"$work/base0.log" &
  pids+=($!) PID[$BA0]=$!
  "$work/agent-base" --shards "$shards" --l1=true --listen 127.0.0.1:$BA1 --http-listen 127.0.0.1:17135 2>"$work/base1.log" &
  pids+=($!) PID[$BA1]=$!
fi
for port in $S0 $S1 $TW $AG0 $AG1 $AG2 $AG3 ${BASELINE:+$BA0 $BA1}; do
  for _ in $(seq 100); do redis-cli -p "$port" PING >/dev/null 2>&1 && break; sleep 0.1; done
done

# cpu PORT: user+system clock ticks of the process serving PORT so far.
TCK=$(getconf CLK_TCK)
cpu() { awk '{ print $14 + $15 }' "/proc/${PID[$1]}/stat"; }

# waited VAR: user+system clock ticks of this shell's waited-for children so far, into VAR (read
# here, not in a subshell, whose children they would be).
waited() { local st; read -r -a st <"/proc/$BASHPID/stat"; printf -v "$1" %d $((st[15] + st[16])); }

# run PORT TEST PIPELINE KEYSPACE LABEL -> "rps p50 p99 cpu-us-per-request loadgen-cpu-%" (the CPU of
# the process on PORT only: the shard for direct rows, the proxy for the others; and
# redis-benchmark's share of one core: near 100%, it is what limits the row, whatever serves it)
run() {
  local before after lg0 lg1 t0 t1
  local cmd=(-t "$2")
  [ "$2" = mget ] && cmd=(MGET $(printf 'key:__rand_int__ %.0s' $(seq 10))) # 10 random keys
  [[ $5 == *-trk ]] && cmd+=(--enable-tracking) # each connection sends CLIENT TRACKING ON first
  before=$(cpu "$1") t0=$(date +%s%N)
  waited lg0
  redis-benchmark -p "$1" -n "$N" -r "$4" -c "$CLIENTS" -d "$SIZE" -P "$3" --csv "${cmd[@]}" 2>/dev/null |
    awk -F'","' 'NR==2 { gsub(/"/, "", $0); split($0, f, ","); printf "%.0f %s %s ", f[2], f[5], f[7] }'
  after=$(cpu "$1") t1=$(date +%s%N)
  waited lg1
  awk -v d=$((after - before)) -v t="$TCK" -v n="$N" -v lg=$((lg1 - lg0)) -v ns=$((t1 - t0)) \
    'BEGIN { printf "%.2f %.0f\n", d * 1e6 / t / n, lg / t * 1e11 / ns }'
}
# R, C, LG and P99 hold req/s, CPU µs per request, redis-benchmark's CPU % and loadgen p99 µs
# under "NAME/LABEL/PIPELINE/ROUND".
declare -A R C LG P99
line() { printf "%-5s %-14s %-12s %-4s %12s %9s %9s %12s %8s\n" "$@"; }
# row NAME PORT TEST PIPELINE KEYSPACE LABEL: measure, record under NAME/LABEL/PIPELINE/round, print.
row() {
  local rps p50 p99 us lg
  read -r rps p50 p99 us lg < <(run "$2" "$3" "$4" "$5" "$6")
  R["$1/$6/$4/$round"]=$rps C["$1/$6/$4/$round"]=$us LG["$1/$6/$4/$round"]=$lg
  line "$round" "$1" "$6" "$4" "$rps" "$p50" "$p99" "$us" "$lg"
}
targets=("direct:$S0" "twemproxy:$TW" "agent-l1-off:$AG0" "agent-l1-on:$AG1" "agent1-l1-off:$AG2" "agent1-l1-on:$AG3")
[ -n "${BASELINE:-}" ] && targets+=("base-l1-off:$BA0" "base-l1-on:$BA1")
go build -o "$work/loadgen" ./hack/loadgen
line round target test -P "req/s" "p50 ms" "p99 ms" "cpu us/req" "lg cpu%"
for round in $(seq "$ROUNDS"); do
  for pipe in 1 16; do
    for test in set get; do
      for t in "${targets[@]}"; do
        row "${t%%:*}" "${t##*:}" "$test" "$pipe" "$KEYSPACE" "$test"
      done
    done
  done
  for t in "${targets[@]}"; do # MGETs of 10 random keys, the keys the SET rows wrote
    row "${t%%:*}" "${t##*:}" mget 1 "$KEYSPACE" mget
  done
  # Hot keys: a small keyspace that fits in L1 (GET), and writes that invalidate its copies (SET);
  # targets alternate within each test, as above.
  hot=("direct:$S0" "twemproxy:$TW" "agent-l1-on:$AG1" "agent1-l1-on:$AG3" ${BASELINE:+"base-l1-on:$BA1"})
  for t in "${hot[@]}"; do
    redis-benchmark -p "${t##*:}" -t set -n 2000 -r "$HOT_KEYS" -c 10 -d "$SIZE" -q >/dev/null 2>&1
  done
  for pipe in 1 16; do
    for test in get set; do
      for t in "${hot[@]}"; do
        row "${t%%:*}" "${t##*:}" "$test" "$pipe" "$HOT_KEYS" "hot-$test"
      done
    done
  done
  # Tracking clients: the agent registers every key they read; with the node L1 on, it serves
  # them from its tracking copies (base-* at an earlier revision may read their keys from the shard).
  for t in "direct:$S0" "agent-l1-on:$AG1" ${BASELINE:+"base-l1-on:$BA1"}; do
    row "${t%%:*}" "${t##*:}" get 1 "$HOT_KEYS" hot-get-trk
    row "${t%%:*}" "${t##*:}" get 1 "$KEYSPACE" get-trk
  done
  # Latency at half the agent's peak (its first round's): a fixed-rate GET load (hack/loadgen
  # measures from each request's scheduled start), the same rate for every target and round.
  half=${half:-$(awk -v r="${R[agent-l1-off/get/1/1]}" 'BEGIN { printf "%d", r / 2 }')}
  for t in "${targets[@]}"; do
    name="${t%%:*}" port="${t##*:}"
    read -r rps p50 p99 p999 < <("$work/loadgen" -addr "127.0.0.1:$port" -rate "$half" -duration 5s -conns "$CLIENTS" -keyspace "$KEYSPACE")
    P99["$name/half/1/$round"]=$p99
    line "$round" "$name" "get@$half/s" 1 "$rps" "$(awk -v u="$p50" 'BEGIN{printf "%.3f", u/1000}')" "$(awk -v u="$p99" 'BEGIN{printf "%.3f", u/1000}')" ""
  done
done

# summary VALUES...: "median [min-max]" of numbers (median of an even count: the mean of the middle two).
summary() {
  printf "%s\n" "$@" | sort -g | awk -v f="$FMT" '{ v[NR] = $1 } END {
    m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
    printf f " [" f "-" f "]", m, v[1], v[NR] }'
}
# over EXPR: summary of EXPR (awk, with a and b) for each round, a and b from the arrays and keys
# given: over ARRAY_A KEY_A ARRAY_B KEY_B EXPR.
over() {
  local -n A=$1 B=$3
  local vals=() r
  for r in $(seq "$ROUNDS"); do
    vals+=("$(awk -v a="${A[$2/$r]}" -v b="${B[$4/$r]}" "BEGIN { printf \"%.4f\", $5 }")")
  done
  summary "${vals[@]}"
}
echo
echo "medians over $ROUNDS rounds (req/s / CPU µs per request):"
printf "%-14s" target; for col in get/1 set/1 get/16 set/16 mget/1 hot-get/1 hot-set/1 hot-get/16 hot-set/16; do printf " | %-18s" "$col"; done; echo
for t in "${targets[@]}"; do
  name="${t%%:*}"
  printf "%-14s" "$name"
  for col in get/1 set/1 get/16 set/16 mget/1 hot-get/1 hot-set/1 hot-get/16 hot-set/16; do
    if [ -z "${R[$name/$col/1]:-}" ]; then printf " | %-18s" ""; continue; fi
    rs=() cs=()
    for r in $(seq "$ROUNDS"); do rs+=("${R[$name/$col/$r]}") cs+=("${C[$name/$col/$r]}"); done
    printf " | %-18s" "$(FMT=%.0f summary "${rs[@]}" | cut -d' ' -f1) / $(FMT=%.1f summary "${cs[@]}" | cut -d' ' -f1)"
  done
  echo
done
echo
echo "ratios against the goals, each taken within a round: median [range] over $ROUNDS rounds (goal in brackets;"
echo "agent: default two threads, agent1: --procs=1):"
export FMT=%.2f
for a in agent agent1; do
  for l1 in off on; do
    for pipe in 1 16; do
      echo "  CPU per request, $a L1 $l1 / twemproxy, GET -P$pipe:  $(over C "$a-l1-$l1/get/$pipe" C "twemproxy/get/$pipe" 'a / b')  [<= 1.0]"
    done
  done
  echo "  hot GET, $a L1 on / direct, -P1:                  $(over R "$a-l1-on/hot-get/1" R "direct/hot-get/1" 'a / b')  [>= 1.2]"
  echo "  CPU per L1 hit, $a / valkey-server CPU per GET, hot -P1: $(over C "$a-l1-on/hot-get/1" C "direct/hot-get/1" 'a / b')  [<= 1.0]"
  echo "    redis-benchmark's CPU in those rows, % of one core: direct $(FMT=%.0f over LG "direct/hot-get/1" LG "direct/hot-get/1" 'a'), $a $(FMT=%.0f over LG "$a-l1-on/hot-get/1" LG "$a-l1-on/hot-get/1" 'a')  [near 100: the load generator, not the server, sets both rates]"
  echo "  hot SET, $a L1 on / twemproxy, -P1:               $(over R "$a-l1-on/hot-set/1" R "twemproxy/hot-set/1" 'a / b')  [>= 1.0]"
  for test in get set; do
    echo "  $test, $a L1 off / twemproxy, -P1:  $(over R "$a-l1-off/$test/1" R "twemproxy/$test/1" 'a / b')  [>= 1.0]"
    echo "  $test, $a L1 off / twemproxy, -P16: $(over R "$a-l1-off/$test/16" R "twemproxy/$test/16" 'a / b')  [>= 1.25]"
  done
  for l1 in off on; do
    echo "  MGET of 10 keys, $a L1 $l1 / twemproxy, -P1: $(over R "$a-l1-$l1/mget/1" R "twemproxy/mget/1" 'a / b') req/s, $(over C "$a-l1-$l1/mget/1" C "twemproxy/mget/1" 'a / b') CPU  [no goal]"
  done
  for l1 in off on; do
    echo "  p99 added over direct at half the agent's peak ($half GET/s), $a L1 $l1: $(FMT=%.0f over P99 "$a-l1-$l1/half/1" P99 "direct/half/1" 'a - b') us  [<= 150]"
  done
done
echo "  tracking clients' GETs, agent L1 on / direct: hot $(over R "agent-l1-on/hot-get-trk/1" R "direct/hot-get-trk/1" 'a / b'), random $(over R "agent-l1-on/get-trk/1" R "direct/get-trk/1" 'a / b') req/s; CPU per request hot $(over C "agent-l1-on/hot-get-trk/1" C "agent-l1-on/hot-get/1" 'a / b') of an untracked hot GET's  [no goal]"
if [ -n "${BASELINE:-}" ]; then
  echo
  echo "this code / the agent at $BASELINE, each taken within a round: req/s and CPU per request, median [range]:"
  for l1 in off on; do
    for col in get/1 set/1 get/16 set/16 mget/1 hot-get/1 hot-set/1 hot-get/16 hot-set/16 hot-get-trk/1 get-trk/1; do
      [ -n "${R[agent-l1-$l1/$col/1]:-}" ] && [ -n "${R[base-l1-$l1/$col/1]:-}" ] || continue
      echo "  L1 $l1 $col: $(over R "agent-l1-$l1/$col" R "base-l1-$l1/$col" 'a / b') req/s, $(over C "agent-l1-$l1/$col" C "base-l1-$l1/$col" 'a / b') CPU"
    done
  done
fi
