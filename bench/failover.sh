#!/usr/bin/env bash
# Failover benchmark on loopback, with real `lingxi` processes (the tests crate's Cluster
# harness, release build):
#   gap   RUNS fresh 3-node clusters; in each, a call in conversation (both sides sending RTP
#         every 20 ms) loses its owner to SIGKILL; the audio gap on each leg is the time from the
#         kill to the first packet of the other side arriving from the new owner (it includes
#         failure detection, the NodeDown commit, the re-INVITE round trip and the test UA's own
#         reaction, a few ms). Median, p99 and max over all legs; Raft commit latency
#         (lingxi_raft_commit_seconds) of the survivors.
#   rate  Call set-up rate through consensus: CONCURRENCY UAs call a queue nobody serves for
#         SECS; each attempt commits the call's arrival before the 480 and then its CDR.
#         Single node against the 3-node cluster.
#
#   bench/failover.sh [all|gap|rate]      # default all
#
# Knobs (environment): RUNS=10 (1..100)  SECS=10  CONCURRENCY=16  OUT=<dir>
# Every loop is bounded; the harness kills every node it started (Drop), by pid.
set -euo pipefail

MODE=${1:-all}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
RUNS=${RUNS:-10}
SECS=${SECS:-10}
CONCURRENCY=${CONCURRENCY:-16}
OUT=${OUT:-${TMPDIR:-/tmp}/lingxi-failover-bench/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
echo "failover bench: raw output under $OUT" >&2
export RUST_BACKTRACE=0 RUST_LIB_BACKTRACE=0

cd "$ROOT"
echo "failover bench: cargo build --release -p lingxi-node" >&2
cargo build --release -p lingxi-node >&2

run_test() { # name, log file, extra env...
  local name=$1 log=$2
  shift 2
  env LINGXI_TEST_TICK_MS=50 "$@" timeout 1800 cargo test --release -p lingxi-tests --test t60_failover -- \
    --ignored --exact "$name" --nocapture --test-threads=1 >"$log" 2>&1 || {
    echo "failover bench: $name failed; see $log" >&2
    grep -E '^Error|FAILED' "$log" | head -20 >&2 || true
    return 1
  }
}

status=0
if [ "$MODE" = all ] || [ "$MODE" = gap ]; then
  echo "failover bench: $RUNS kill-the-owner runs" >&2
  run_test failover_gap "$OUT/gap.log" FAILOVER_RUNS="$RUNS" || status=1
fi
if [ "$MODE" = all ] || [ "$MODE" = rate ]; then
  echo "failover bench: call set-up rate, ${SECS}s x $CONCURRENCY UAs, single vs 3 nodes" >&2
  run_test call_rate "$OUT/rate.log" CALL_RATE_SECS="$SECS" CALL_RATE_CONCURRENCY="$CONCURRENCY" || status=1
fi

python3 - "$OUT" "$RUNS" <<'PY' | tee "$OUT/summary.md"
import math, os, re, sys
out, runs = sys.argv[1], sys.argv[2]

def pct(xs, p):  # nearest rank
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[max(0, math.ceil(p * len(xs)) - 1)]

def kv(line):
    return dict(re.findall(r"(\w+)=([^\s]+)", line))

print(f"## Failover (bench/failover.sh, {os.uname().nodename}, {os.cpu_count()} cores)\n")
gap = os.path.join(out, "gap.log")
if os.path.exists(gap):
    lines = open(gap, errors="replace").read().splitlines()
    caller, agent, reinv = [], [], []
    for l in lines:
        if "GAP caller_ms=" in l:
            d = kv(l[l.index("GAP caller_ms="):])
            caller.append(int(d["caller_ms"])); agent.append(int(d["agent_ms"])); reinv.append(int(d["reinvite_ms"]))
    failed = sum(1 for l in lines if re.search(r"\brun \d+ FAILED", l))
    both = caller + agent
    print(f"Audio gap, SIGKILL of the call's owner -> first RTP from the new owner "
          f"({len(caller)} runs ok, {failed} failed, of {runs}):\n")
    print("| leg | n | median ms | p99 ms | max ms |")
    print("|---|---|---|---|---|")
    for name, xs in (("caller", caller), ("agent", agent), ("both legs", both), ("re-INVITEs answered", reinv)):
        if xs:
            print(f"| {name} | {len(xs)} | {pct(xs, .5)} | {pct(xs, .99)} | {max(xs)} |")
    print(f"\nAim: median <= 1000 ms, p99 <= 2000 ms -> "
          + ("met" if both and pct(both, .5) <= 1000 and pct(both, .99) <= 2000 else "NOT met"))
    q = {}
    for l in lines:
        m = re.search(r'METRIC run=(\d+) node=(\S+) lingxi_raft_commit_seconds\{quantile="([\d.]+)"\} (\S+)', l)
        if m:
            q.setdefault(m.group(3), []).append(float(m.group(4)) * 1000)
    if q:
        print("\nRaft commit latency during the gap runs (lingxi_raft_commit_seconds, survivors; "
              "median over runs and nodes of each node's quantile):\n")
        print("| quantile | ms |")
        print("|---|---|")
        for k in ("0.5", "0.9", "0.99", "1"):
            if k in q:
                print(f"| {k} | {pct(q[k], .5):.1f} |")
rate = os.path.join(out, "rate.log")
if os.path.exists(rate):
    lines = open(rate, errors="replace").read().splitlines()
    rows = [kv(l[l.index("RATE mode="):]) for l in lines if "RATE mode=" in l]
    if rows:
        print("\nCall set-up rate (calls committed, refused 480, CDR committed; test UAs on the same cores):\n")
        print("| mode | UAs | calls | calls/s | set-up p50 ms | set-up p99 ms | other answers (code:count) |")
        print("|---|---|---|---|---|---|---|")
        for d in rows:
            print(f"| {d['mode']} | {d['concurrency']} | {d['calls']} | {d['cps']} | {d['setup_p50_ms']} | {d['setup_p99_ms']} | {d.get('other_codes', d['other'])} |")
    q = {}
    for l in lines:
        m = re.search(r'METRIC mode=cluster3 node=(\S+) lingxi_raft_commit_seconds\{quantile="([\d.]+)"\} (\S+)', l)
        if m:
            q.setdefault(m.group(2), []).append(float(m.group(3)) * 1000)
    sums = {}
    for l in lines:
        m = re.search(r'METRIC mode=cluster3 node=(\S+) lingxi_raft_commit_seconds_(sum|count) (\S+)', l)
        if m:
            sums.setdefault(m.group(1), {})[m.group(2)] = float(m.group(3))
    if sums:
        means = ", ".join(f"{n} {1000 * v['sum'] / v['count']:.2f} ms over {int(v['count'])} commits"
                          for n, v in sorted(sums.items()) if v.get("count"))
        print(f"\nRaft commit latency under the rate load, mean (sum/count): {means}.")
    if q:
        print("\nRaft commit latency quantiles at the end of the rate run (the exporter's summary "
              "covers a recent window only; median over nodes):\n")
        print("| quantile | ms |")
        print("|---|---|")
        for k in ("0.5", "0.9", "0.99", "1"):
            if k in q:
                print(f"| {k} | {pct(q[k], .5):.1f} |")
PY
exit $status
