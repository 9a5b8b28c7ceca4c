#!/usr/bin/env bash
# Valkey's own test suite (tests/ of the source release in shared/third_party), unit by unit, in
# external-server mode against one valkey-server (the control) and against an agent over two
# shards, side by side. Both runs use one database (--singledb: the agent serves db 0 only)
# and leave out the tests tagged needs:repl (they read the server's replication stream with
# SYNC, which no proxy offers its clients); the harness answers CONFIG and DEBUG for the agent's
# run (valkey-suite/harness.tcl). Prints per unit the tests passed on each and how many of the tests that
# pass on Valkey pass through the agent; the logs and the lists of tests stay in $OUT.
#
#   hack/valkey-suite.sh [unit ...]      (default: the units a cache endpoint plausibly serves)
#   OUT=/tmp/suite UNIT_TIMEOUT=600 hack/valkey-suite.sh type/list
#   AGENT_BIN=/path/to/agent hack/valkey-suite.sh    (an agent built elsewhere, e.g. an older one)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=versions.env
source hack/versions.env
command -v tclsh >/dev/null || { echo "valkey-suite: tclsh is missing (apt-get install tcl)" >&2; exit 1; }
server="$(hack/valkey-bins.sh)"
[[ "$server" == */valkey-server ]] || { echo "valkey-suite: needs Valkey built from its source release" >&2; exit 1; }
bin="$(dirname "$server")"
tree="$bin/suite/valkey-$VALKEY_VERSION"
if [[ ! -d "$tree/tests" ]]; then # the suite runs from the source tree, with the binaries in src/
  mkdir -p "$bin/suite"
  tar -xzf "../shared/third_party/valkey-$VALKEY_VERSION.tar.gz" -C "$bin/suite" "valkey-$VALKEY_VERSION/tests" "valkey-$VALKEY_VERSION/runtest" "valkey-$VALKEY_VERSION/src"
  cp "$bin/valkey-server" "$bin/valkey-cli" "$bin/valkey-benchmark" "$tree/src/"
fi
# The harness's own answers to CONFIG SET and DEBUG (harness.tcl), hooked into the test client's
# dispatch; in effect only where CF_SUITE_SHARDS is set (the agent's runs).
client="$tree/tests/support/valkey.tcl"
cp hack/valkey-suite/harness.tcl "$tree/tests/support/cf_harness.tcl"
if ! grep -q cf_harness "$client"; then
  sed -i 's|^proc ::valkey::__dispatch__ {id method args} {$|source [file join [file dirname [info script]] cf_harness.tcl]\n&\n    if {[::valkey::cf_admin $id $method $args]} {return [::valkey::cf_answer $id $method $args]}|' "$client"
fi
# A tree patched by an earlier version of this script hooks cf_to_shards directly.
sed -i 's|{return \[::valkey::cf_to_shards $method $args\]}|{return [::valkey::cf_answer $id $method $args]}|' "$client"
OUT="${OUT:-$(mktemp -d)}" UNIT_TIMEOUT="${UNIT_TIMEOUT:-900}"
mkdir -p "$OUT"
units=("$@")
if [[ ${#units[@]} -eq 0 ]]; then
  units=(type/string type/incr expire keyspace protocol quit info type/hash type/list type/set
    type/zset multi scan tracking pubsub scripting bitops dump other introspection)
fi

work="$(mktemp -d)"
pids=()
stop_servers() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; pids=(); }
trap 'stop_servers; rm -rf "$work"' EXIT
CONTROL=17201 S0=17202 S1=17203 AGENT=17210
for port in $CONTROL $S0 $S1 $AGENT 17211; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "valkey-suite: port $port is already in use" >&2; exit 1
  fi
done
if [[ -n "${AGENT_BIN:-}" ]]; then cp "$AGENT_BIN" "$work/agent"; else go build -o "$work/agent" ./cmd/agent; fi
# start_servers: a fresh control, two fresh shards and an agent over them, for each unit (a
# unit may leave a server paused, reconfigured or full). The suite's external mode expects a
# server it may reconfigure and flush: the control gets the settings the shards get.
start_servers() {
  rm -rf "$work/data" && mkdir -p "$work/data"
  for port in $CONTROL $S0 $S1; do
    "$server" --port "$port" --bind 127.0.0.1 --save "" --appendonly no --loglevel warning \
      --dir "$work/data" --dbfilename "dump-$port.rdb" --enable-debug-command yes >/dev/null &
    pids+=($!)
  done
  # As an application would run it, without the policy TTL and size limit Valkey does not have.
  "$work/agent" --shards "shard-0=127.0.0.1:$S0,shard-1=127.0.0.1:$S1" --allow-flush --default-ttl 0 \
    --max-value-bytes $((512 << 20)) --listen 127.0.0.1:$AGENT --http-listen 127.0.0.1:17211 2>>"$OUT/agent.log" &
  pids+=($!)
  for port in $CONTROL $S0 $S1 $AGENT; do
    for _ in $(seq 100); do "$bin/valkey-cli" -p "$port" PING >/dev/null 2>&1 && break; sleep 0.1; done
  done
}

# run TARGET PORT UNIT: the unit's log, and the names of the tests it passed, one per line.
run() {
  local log="$OUT/$1-${3//\//_}" shards=""
  [ "$1" = agent ] && shards="$S0,$S1"
  (cd "$tree" && CF_SUITE_SHARDS="$shards" timeout "$UNIT_TIMEOUT" ./runtest --host 127.0.0.1 --port "$2" --single "unit/$3" \
    --clients 1 --singledb --tags -needs:repl --timeout 60 >"$log.log" 2>&1) || true
  sed 's/\x1b\[[0-9;]*m//g' "$log.log" | sed -n 's/^\[ok\]: \(.*\) ([0-9]* ms)$/\1/p' | sort -u >"$log.ok"
}
printf "%-16s %8s %8s %22s\n" unit valkey agent "agent of valkey's"
tv=0 ta=0 tb=0
for u in "${units[@]}"; do
  start_servers
  run valkey $CONTROL "$u"
  run agent $AGENT "$u"
  stop_servers
  v="$OUT/valkey-${u//\//_}.ok" a="$OUT/agent-${u//\//_}.ok"
  nv=$(wc -l <"$v") na=$(wc -l <"$a") nb=$(comm -12 "$v" "$a" | wc -l)
  tv=$((tv + nv)) ta=$((ta + na)) tb=$((tb + nb))
  printf "%-16s %8d %8d %14d of %d\n" "$u" "$nv" "$na" "$nb" "$nv"
done
printf "%-16s %8d %8d %14d of %d\n" total "$tv" "$ta" "$tb" "$tv"
echo "valkey-suite: logs in $OUT"
