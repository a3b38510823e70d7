#!/usr/bin/env bash
# Lingxi benchmark on loopback, driven by sipp: (1) calls per second through the queue to
# auto-answering agents, stepped rates, bounded call counts; (2) concurrent bridged calls with
# RTP both ways (memory per call, packets relayed per second); side by side with the Kamailio
# anchor (/work/shared/bench/kamailio-anchor) at the same call length and rates.
#
#   bench/run.sh [all|cps|rec|conc|kamailio|profile]     # default all; see BENCHMARKS.md
#
# Knobs (environment): RATES="200 500 1000 1500" STEP_SECS=20 CALL_MS=1000 RUNS=3 AGENTS=3000
#   CONC_CALLS=1200 CONC_RATE=100 CONC_LOOPS=4 (x 7.05 s of audio per call)
#   CONC_RECORDING=0 PROFILE_RATE=1000 KAMAILIO=1 STOP_ON_FAIL=1 BENCH_RUNS=<dir> ANCHOR=<dir> QUIET_WAIT=6
# Ports (loopback only): node SIP 25060, HTTP 25080, agents' sipp 25070 (RTP 26000),
# callers' sipp 25061 (RTP 26100), node RTP 10000-32000. Every loop is bounded; every
# process started here is stopped by its pid on exit.
set -euo pipefail
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

MODE=${1:-all}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
ANCHOR=${ANCHOR:-/work/shared/bench/kamailio-anchor}
RATES=${RATES:-"200 500 1000 1500"}
STEP_SECS=${STEP_SECS:-20}
CALL_MS=${CALL_MS:-1000}
RUNS=${RUNS:-3}
AGENTS=${AGENTS:-3000}
CONC_CALLS=${CONC_CALLS:-1200}
CONC_RATE=${CONC_RATE:-100}
CONC_LOOPS=${CONC_LOOPS:-4}
CONC_RECORDING=${CONC_RECORDING:-0}
KAMAILIO=${KAMAILIO:-1}
STOP_ON_FAIL=${STOP_ON_FAIL:-1}
QUIET_WAIT=${QUIET_WAIT:-6}
SIP_PORT=25060 HTTP_PORT=25080 UAS_PORT=25070 UAS_MEDIA=26000 UAC_PORT=25061 UAC_MEDIA=26100
SIPP_COMMON=(-i 127.0.0.1 -buff_size 4194304 -nostdin -trace_err)
WORK=${BENCH_RUNS:-${TMPDIR:-/tmp}/lingxi-bench}/$(date +%Y%m%d-%H%M%S)
# LINGXI_BIN=<path> benchmarks that binary as it is (no build): for A/B runs of two builds.
BIN=${LINGXI_BIN:-$ROOT/target/release/lingxi}
API=http://127.0.0.1:$HTTP_PORT
# A fresh admin API key per run: the node's config holds its SHA-256, curl sends the key.
BENCH_KEY=$(python3 -c 'import secrets; print("lxk_" + secrets.token_urlsafe(32))')
BENCH_KEY_SHA256=$(python3 -c 'import hashlib,sys; print(hashlib.sha256(sys.argv[1].encode()).hexdigest())' "$BENCH_KEY")
mkdir -p "$WORK"
echo "bench: results under $WORK" >&2

command -v sipp >/dev/null || { echo "bench: sipp missing (apt-get install -y sip-tester)" >&2; exit 1; }
command -v curl >/dev/null || { echo "bench: curl missing" >&2; exit 1; }

NODE_PID=0 UAS_PID=0
stop_pid() { # pid: TERM, wait up to 10 s, then KILL
  local pid=$1 i
  [ "$pid" -gt 0 ] || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for i in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
cleanup() { stop_pid "$UAS_PID"; UAS_PID=0; stop_pid "$NODE_PID"; NODE_PID=0; }
trap cleanup EXIT

build() {
  if [ -n "${LINGXI_BIN:-}" ]; then echo "bench: using $BIN as it is" >&2; return; fi
  echo "bench: cargo build --release -p lingxi-node" >&2
  (cd "$ROOT" && cargo build --release -p lingxi-node >&2)
}

# Counts ready agents from the API.
ready_agents() {
  curl -sf -H "Authorization: Bearer $BENCH_KEY" "$API/api/v1/agents" | python3 -c 'import json,sys; print(sum(a["state"]=="ready" for a in json.load(sys.stdin)))'
}
live_calls() { curl -sf -H "Authorization: Bearer $BENCH_KEY" "$API/api/v1/calls" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))'; }
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
counter() { # name: a counter's value from /metrics (0 if absent)
  curl -sf -H "Authorization: Bearer $BENCH_KEY" "$API/metrics" | awk -v n="$1" '$1==n {v=$2} END {printf "%d\n", v+0}'
}

# start_node DIR RECORDING(true|false): a node with AGENTS agents in queue `support`.
start_node() {
  local dir=$1 rec=$2
  mkdir -p "$dir"
  python3 - "$dir" "$rec" "$AGENTS" "$SIP_PORT" "$HTTP_PORT" "$BENCH_KEY_SHA256" > "$dir/lingxi.toml" <<'PY'
import sys
d, rec, n, sip, http, key_sha256 = sys.argv[1:7]
print(f'''[node]
id = "bench"
data_dir = "{d}/data"

[sip]
listen_ip = "127.0.0.1"
udp_port = {sip}
tcp_port = {sip}

[http]
listen = "127.0.0.1:{http}"

[media]
rtp_ip = "127.0.0.1"
rtp_port_min = 10000
rtp_port_max = 32000

[recording]
enabled = {rec}

[acd]
ring_timeout_secs = 5
# Keep every agent in the pool: an overloaded sipp UAS that misses a ring would otherwise
# make agents not-ready and shrink the pool during the sweep.
not_ready_on_no_answer = false
wrapup_secs = 0
max_wait_secs = 30

[[queues]]
id = "support"
extensions = ["8000"]
skill = "support"

[queues.overflow]
action = "hangup"
when_no_agents = true

[[auth.api_keys]]
name = "bench"
role = "admin"
sha256 = "{key_sha256}"
''')
for i in range(int(n)):
    a = 100000 + i
    print(f'[[agents]]\nid = "{a}"\npassword = "pw{a}"\nskills = {{ support = 5 }}\n')
PY
  RUST_LOG=${RUST_LOG:-warn} nice -n -20 "$BIN" run --config "$dir/lingxi.toml" > "$dir/node.log" 2>&1 &
  NODE_PID=$!
  local i
  for i in $(seq 1 100); do
    curl -sf "$API/healthz" >/dev/null 2>&1 && return 0
    kill -0 "$NODE_PID" 2>/dev/null || break
    sleep 0.2
  done
  echo "bench: node did not start, see $dir/node.log" >&2; tail -5 "$dir/node.log" >&2; exit 1
}

# register_agents DIR: every agent registers from 127.0.0.1:UAS_PORT (INVITEs go to the
# source), 40 per sipp run (see register_agents.py for why not one CSV-driven run).
register_agents() {
  local dir=$1 first n
  for first in $(seq 0 40 $((AGENTS - 1))); do
    n=$(( AGENTS - first < 40 ? AGENTS - first : 40 ))
    python3 "$HERE/register_agents.py" $((100000 + first)) "$n" > "$dir/register_chunk.xml"
    # One retry: re-registering is idempotent, and sipp 3.6.1 once aborted a chunk on a
    # duplicate 200 right after a heavy run.
    (cd "$dir" && timeout 60 sipp "127.0.0.1:$SIP_PORT" -sf register_chunk.xml -p "$UAS_PORT" -m 1 \
        "${SIPP_COMMON[@]}" -timeout 50s -timeout_error > register.out 2>&1) \
      || (sleep 2; cd "$dir" && timeout 60 sipp "127.0.0.1:$SIP_PORT" -sf register_chunk.xml -p "$UAS_PORT" -m 1 \
        "${SIPP_COMMON[@]}" -timeout 50s -timeout_error > register.out 2>&1) \
      || { echo "bench: registering agents $((100000 + first))+ failed, see $dir/register.out" >&2; exit 1; }
  done
  local ready; ready=$(ready_agents)
  echo "bench: $ready of $AGENTS agents ready" >&2
  [ "$ready" -eq "$AGENTS" ] || { echo "bench: not every agent is ready" >&2; exit 1; }
}

# start_uas DIR [extra sipp args]: every agent's phone (built-in uas, auto-answer).
start_uas() {
  local dir=$1; shift
  (cd "$dir" && exec nice -n -20 sipp -sn uas -p "$UAS_PORT" -mp "$UAS_MEDIA" "${SIPP_COMMON[@]}" "$@" > uas.out 2>&1) &
  UAS_PID=$!
  sleep 1
}

# drain: wait (≤ 60 s) until no call is live and every agent is ready again.
drain() {
  local i
  for i in $(seq 1 60); do
    [ "$(live_calls)" -eq 0 ] && [ "$(ready_agents)" -eq "$AGENTS" ] && return 0
    sleep 1
  done
  echo "bench: after 60 s, $(live_calls) calls still live and $(ready_agents) of $AGENTS agents ready" >&2
}

# cps_step DIR RATE: one bounded step (RATE x STEP_SECS calls of CALL_MS), one JSON line out.
cps_step() {
  local dir=$1 rate=$2 calls=$(( $2 * STEP_SECS ))
  local out=$dir/cps_r$rate limit=$(( STEP_SECS * 2 + CALL_MS / 1000 + 40 ))
  mkdir -p "$out"
  (
    cd "$out"
    "$ANCHOR/wait_quiet.sh" "$QUIET_WAIT" > quiet.txt || true
    python3 "$ANCHOR/cpu_snap.py" lingxi=$NODE_PID uas=$UAS_PID > cpu_before.json
    local since_ms; since_ms=$(date +%s%3N)
    local t0; t0=$(date +%s.%N)
    timeout $limit nice -n -20 sipp -sn uac "127.0.0.1:$SIP_PORT" -s support -p "$UAC_PORT" -mp "$UAC_MEDIA" \
        -r "$rate" -m "$calls" -d "$CALL_MS" -l 15000 -default_behaviors all,-abortunexp \
        "${SIPP_COMMON[@]}" -trace_stat -stf uac_stat.csv -fd 1 -trace_screen -screen_file uac_screen.log \
        -timeout ${limit}s > uac.out 2>&1 &
    local to=$!
    sleep 0.2
    local uac; uac=$(pgrep -P $to | head -1 || true)
    [ -n "$uac" ] || uac=999999999   # never `kill -0 0` (the whole process group)
    local uac_ticks=0 line i
    for i in $(seq 1 $(( limit * 2 + 10 ))); do
      kill -0 "$uac" 2>/dev/null || break
      if read -r line < "/proc/$uac/stat" 2>/dev/null; then
        set -- ${line##*) }; uac_ticks=$(( ${12} + ${13} ))
      fi
      sleep 0.5
    done
    local rc=0; wait $to || rc=$?
    local t1; t1=$(date +%s.%N)
    python3 "$ANCHOR/cpu_snap.py" lingxi=$NODE_PID uas=$UAS_PID > cpu_after_tmp.json
    python3 -c "import json;a=json.load(open('cpu_after_tmp.json'));a['uac']=$uac_ticks;print(json.dumps(a))" > cpu_after.json
    local rss; rss=$(rss_kb $NODE_PID)
    python3 "$ANCHOR/parse_stat.py" uac_stat.csv cpu_before.json cpu_after.json \
        "$(python3 -c "print($t1-$t0)")" lingxi "$rate" "$CALL_MS" "$calls" 0 > summary_sipp.json
    drain
    curl -sf -H "Authorization: Bearer $BENCH_KEY" "$API/api/v1/cdrs?limit=100000&since_ms=$since_ms" > cdrs.json || echo '[]' > cdrs.json
    python3 - "$rc" "$rss" "$(rss_kb $NODE_PID)" <<'PY' | tee summary.json
import json, sys, collections
rc, rss, rss_after = sys.argv[1:4]
s = json.load(open('summary_sipp.json'))
cdrs = json.load(open('cdrs.json'))
outcomes = collections.Counter(c.get('outcome') for c in cdrs)
waits = sorted(c.get('wait_secs') or 0 for c in cdrs if c.get('agent'))
s.update(sipp_rc=int(rc), node_rss_kb_end=int(rss), node_rss_kb_drained=int(rss_after),
         cdrs=len(cdrs), cdr_outcomes=dict(outcomes), bridged=sum(1 for c in cdrs if c.get('agent')),
         wait_ms_p50=round(1000 * waits[len(waits) // 2], 1) if waits else None,
         wait_ms_p99=round(1000 * waits[int(len(waits) * 0.99)], 1) if waits else None)
print(json.dumps(s))
PY
  ) | tail -1
}

# step_bad JSON: true when the step is clearly over the ceiling (the anchor's rule).
step_bad() {
  python3 - "$1" <<'PY'
import json, sys
d = json.loads(sys.argv[1])
bad = d['failed_pct'] >= 1.0 or (d['sustained_cps_median'] or 0) < 0.9 * d['target_cps']
sys.exit(0 if bad else 1)
PY
}

# cps_sweep DIR RECORDING: one node, all RATES in order.
cps_sweep() {
  local dir=$1 rec=$2 rate line
  start_node "$dir" "$rec"
  register_agents "$dir"
  start_uas "$dir"
  echo "{\"idle_rss_kb\": $(rss_kb $NODE_PID), \"agents\": $AGENTS, \"recording\": $rec}" > "$dir/idle.json"
  for rate in $RATES; do
    line=$(cps_step "$dir" "$rate")
    echo "$line" | python3 -c "import json,sys; d=json.load(sys.stdin); d['recording']=$( [ "$rec" = true ] && echo True || echo False ); print(json.dumps(d))" \
      | tee -a "$WORK/lingxi_cps.jsonl"
    if [ "$STOP_ON_FAIL" = 1 ] && step_bad "$line"; then echo "bench: stopping the sweep after $rate cps" >&2; break; fi
  done
  stop_pid "$UAS_PID"; UAS_PID=0
  stop_pid "$NODE_PID"; NODE_PID=0
}

kamailio_sweep() {
  local dir=$1
  command -v kamailio >/dev/null || { echo "bench: kamailio missing (apt-get install -y kamailio)" >&2; return 1; }
  mkdir -p "$dir"
  ANCHOR_RUNS=$dir QUIET_WAIT=$QUIET_WAIT "$ANCHOR/sweep.sh" proxy "$CALL_MS" "$STEP_SECS" 4 $RATES >&2 || true
  cat "$dir/results.jsonl" >> "$WORK/kamailio_cps.jsonl"
}

# The caller for the concurrency test: INVITE, then CONC_LOOPS x sipp's 7.05 s A-law clip, BYE.
caller_rtp_scenario() {
  python3 - "$CONC_LOOPS" "$ROOT/tests/sipp/caller_pcap.xml" <<'PY'
import sys, re
loops, src = int(sys.argv[1]), open(sys.argv[2]).read()
talk = '''  <nop>
    <action>
      <exec play_pcap_audio="pcap/g711a.pcap"/>
    </action>
  </nop>
  <pause milliseconds="7050"/>
'''
start = src.index('  <!-- Talk:')
end = src.index('  <send retrans="500">', start)
print(src[:start] + f'  <!-- Talk: {loops} x 7.05 s of A-law audio. -->\n' + talk * loops + '\n' + src[end:])
PY
}

# conc_run DIR RECORDING: CONC_CALLS long calls with RTP both ways; samples RSS and RTP counters.
conc_run() {
  local dir=$1 rec=$2
  start_node "$dir" "$rec"
  register_agents "$dir"
  start_uas "$dir" -rtp_echo
  caller_rtp_scenario > "$dir/caller_rtp.xml"
  ln -sfn /usr/share/sip-tester "$dir/pcap"
  sleep 2
  local idle; idle=$(rss_kb $NODE_PID)
  local secs=$(( CONC_CALLS / CONC_RATE + CONC_LOOPS * 8 + 30 ))
  python3 "$ANCHOR/cpu_snap.py" lingxi=$NODE_PID uas=$UAS_PID > "$dir/cpu_before.json"
  local t0; t0=$(date +%s.%N)
  (cd "$dir" && exec timeout $((secs + 30)) nice -n -20 sipp "127.0.0.1:$SIP_PORT" -sf caller_rtp.xml -s support \
      -p "$UAC_PORT" -mp "$UAC_MEDIA" -r "$CONC_RATE" -m "$CONC_CALLS" -l "$CONC_CALLS" \
      -default_behaviors all,-abortunexp "${SIPP_COMMON[@]}" -trace_stat -stf conc_stat.csv -fd 1 \
      -timeout ${secs}s > uac.out 2>&1) &
  local uac=$!
  # Samples: time since start, node RSS, RTP counters (only /proc and /metrics: the calls
  # API is too slow to poll under load); live calls come from sipp's own stats (CurrentCall).
  echo "t_s rss_kb rtp_in rtp_out" > "$dir/samples.txt"
  local i
  for i in $(seq 1 $(( secs + 20 ))); do
    kill -0 $uac 2>/dev/null || break
    echo "$(date +%s.%N) $t0 $(rss_kb $NODE_PID) $(counter lingxi_rtp_packets_in_total) $(counter lingxi_rtp_packets_out_total)" \
      | awk '{printf "%.1f %s %s %s\n", $1 - $2, $3, $4, $5}' >> "$dir/samples.txt"
    sleep 1
  done
  local rc=0; wait $uac || rc=$?
  local t1; t1=$(date +%s.%N)
  python3 "$ANCHOR/cpu_snap.py" lingxi=$NODE_PID uas=$UAS_PID > "$dir/cpu_after.json"
  drain
  curl -sf -H "Authorization: Bearer $BENCH_KEY" "$API/api/v1/cdrs?limit=100000" > "$dir/cdrs.json" || echo '[]' > "$dir/cdrs.json"
  python3 - "$dir" "$rc" "$idle" "$CONC_CALLS" "$rec" "$(python3 -c "print($t1-$t0)")" <<'PY' | tee -a "$WORK/lingxi_conc.jsonl"
import json, sys, collections, statistics, csv
d, rc, idle, calls, rec, wall = sys.argv[1:7]
idle, calls, wall = int(idle), int(calls), float(wall)
rows = [list(map(float, l.split())) for l in open(f'{d}/samples.txt').read().splitlines()[1:] if l.strip()]
st = list(csv.reader(open(f'{d}/conc_stat.csv'), delimiter=';'))
ix = {h: i for i, h in enumerate(st[0])}; last = st[-1]
secs = lambda t: sum(int(x) * m for x, m in zip(t.split(':')[:3], (3600, 60, 1)))
# sipp's stat rows: (seconds since sipp started, live calls); the plateau is where live calls
# stay ≥ 95 % of the target. Sample times are since the same start (± 0.2 s).
live_at = [(secs(r[ix['ElapsedTime(C)']]), int(r[ix['CurrentCall']])) for r in st[1:] if len(r) > ix['CurrentCall']]
peak = max((c for _, c in live_at), default=0)
high = [t for t, c in live_at if c >= 0.95 * max(calls, 1)] or [t for t, c in live_at if c >= 0.95 * peak]
lo, hi = (min(high), max(high)) if high else (0, 0)
live = statistics.median(c for t, c in live_at if lo <= t <= hi) if high else None
plateau = [r for r in rows if lo + 1 <= r[0] <= hi - 1]
rss = statistics.median(r[1] for r in plateau) if plateau else None
rate = lambda k: round((plateau[-1][k] - plateau[0][k]) / (plateau[-1][0] - plateau[0][0])) if len(plateau) > 1 else None
b, a = json.load(open(f'{d}/cpu_before.json')), json.load(open(f'{d}/cpu_after.json'))
cpu = {k: round((a[k] - b[k]) / a['_hz'] / wall * 100, 1) for k in ('lingxi', 'uas')}
cdrs = json.load(open(f'{d}/cdrs.json'))
# Calls really bridged at once (answered by an agent), from the CDRs: sipp's callers count as
# live as soon as the switch answers them, also while they wait in the queue.
edges = sorted([(c['answered_ms'], 1) for c in cdrs if c.get('answered_ms')] + [(c['ended_ms'], -1) for c in cdrs if c.get('answered_ms')])
level = peak_bridged = 0
for _, step in edges:
    level += step; peak_bridged = max(peak_bridged, level)
out = dict(peak_bridged=peak_bridged, recording=rec == 'true', target_calls=calls, sipp_rc=int(rc),
           created=int(last[ix['TotalCallCreated']]), ok=int(last[ix['SuccessfulCall(C)']]),
           failed=int(last[ix['FailedCall(C)']]), retrans=int(last[ix['Retransmissions(C)']]),
           plateau_samples=len(plateau), plateau_live_calls=live,
           rtp_in_total=int(rows[-1][2]) if rows else None, rtp_out_total=int(rows[-1][3]) if rows else None, idle_rss_kb=idle, plateau_rss_kb=rss,
           kib_per_call=round((rss - idle) / live, 1) if rss and live else None,
           plateau_s=hi - lo, rtp_in_pps=rate(2), rtp_out_pps=rate(3),
           expected_pps_each_way=round(live * 2 * 1000 / 30) if live else None,
           cpu_pct_of_one_core_whole_run=cpu, wall_s=round(wall, 1),
           cdr_outcomes=dict(collections.Counter(c.get('outcome') for c in cdrs)))
print(json.dumps(out))
PY
  stop_pid "$UAS_PID"; UAS_PID=0
  stop_pid "$NODE_PID"; NODE_PID=0
}

# profile DIR: perf profile of the node for 10 s of a PROFILE_RATE cps step (where the time goes).
profile() {
  local dir=$1 rate=${PROFILE_RATE:-1000}
  command -v perf >/dev/null || { echo "bench: perf missing" >&2; return 1; }
  start_node "$dir" false
  register_agents "$dir"
  start_uas "$dir"
  (cd "$dir" && exec timeout 60 sipp -sn uac "127.0.0.1:$SIP_PORT" -s support -p "$UAC_PORT" -mp "$UAC_MEDIA" \
      -r "$rate" -m $(( rate * 20 )) -d "$CALL_MS" -l 15000 -default_behaviors all,-abortunexp \
      "${SIPP_COMMON[@]}" -timeout 55s > uac.out 2>&1) &
  local uac=$!
  sleep 5
  perf record -F 499 -g -o "$dir/perf.data" -p "$NODE_PID" -- sleep 10 > "$dir/perf_record.out" 2>&1 || true
  wait $uac || true
  perf report -i "$dir/perf.data" --stdio --no-children --sort dso,symbol --percent-limit 0.7 2>/dev/null \
    | grep -v '^$' | grep '%' | head -60 > "$dir/perf_top.txt" || true
  perf report -i "$dir/perf.data" --stdio --no-children --sort comm --percent-limit 1 2>/dev/null \
    | grep '%' | head -20 > "$dir/perf_threads.txt" || true
  echo "bench: profile in $dir/perf_top.txt and perf_threads.txt" >&2
  stop_pid "$UAS_PID"; UAS_PID=0
  stop_pid "$NODE_PID"; NODE_PID=0
}

{
  echo "date: $(date -Is)"
  echo "nproc: $(nproc)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
  echo "mem: $(awk '/MemTotal/ {print $2 " kB"}' /proc/meminfo)"
  echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "kernel: $(uname -r)"
  echo "sipp: $(sipp -v 2>&1 | grep -m1 SIPp | sed 's/^ *//')"
  echo "kamailio: $(kamailio -v 2>/dev/null | head -1 || echo missing)"
  echo "git: $(cd "$ROOT" && git rev-parse --short HEAD) (+ uncommitted changes: $(cd "$ROOT" && git status --porcelain | wc -l) files)"
  echo "knobs: RATES='$RATES' STEP_SECS=$STEP_SECS CALL_MS=$CALL_MS RUNS=$RUNS AGENTS=$AGENTS CONC_CALLS=$CONC_CALLS CONC_RATE=$CONC_RATE CONC_LOOPS=$CONC_LOOPS"
} | tee "$WORK/machine.txt" >&2

build
case "$MODE" in
  all|cps|kamailio|rec)
    for run in $(seq 1 "$RUNS"); do
      if [ "$MODE" != kamailio ] && [ "$MODE" != rec ]; then cps_sweep "$WORK/run$run/lingxi" false; fi
      if [ "$KAMAILIO" = 1 ] && [ "$MODE" != cps ] && [ "$MODE" != rec ]; then kamailio_sweep "$WORK/run$run/kamailio"; fi
    done
    if [ "$MODE" = all ] || [ "$MODE" = rec ]; then cps_sweep "$WORK/recording" true; fi
    ;;&
  all|conc)
    conc_run "$WORK/conc" false
    if [ "$CONC_RECORDING" = 1 ]; then conc_run "$WORK/conc_rec" true; fi
    ;;
  profile) profile "$WORK/profile" ;;
  cps|kamailio|rec) ;;
  *) echo "usage: $0 [all|cps|rec|conc|kamailio|profile]" >&2; exit 2 ;;
esac
python3 "$HERE/summarize.py" "$WORK" | tee "$WORK/summary.md"
