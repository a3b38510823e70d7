#!/usr/bin/env bash
# Starts the three nodes of this example cluster on 127.0.0.1, logs in logs/nodeN.log.
#
#   ./start.sh          start node1..node3 (in the background) and wait for a leader
#   ./start.sh stop     stop them (SIGTERM: live calls get a BYE, state is flushed)
#
# The binary: $LINGXI_BIN, else `lingxi` on PATH, else the newer of target/{release,debug}/lingxi
# of this repository (build it with `cargo build --release -p lingxi-node`). State: data/nodeN/ here;
# `rm -rf data` for a fresh cluster.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
logs="$here/logs"
mkdir -p "$logs"

if [[ "${1:-}" == "stop" ]]; then
    for n in 1 2 3; do
        pidf="$logs/node$n.pid"
        if [[ -f "$pidf" ]] && kill -0 "$(cat "$pidf")" 2>/dev/null; then
            kill -TERM "$(cat "$pidf")" && echo "node$n (pid $(cat "$pidf")) stopping"
        fi
        rm -f "$pidf"
    done
    exit 0
fi

bin="${LINGXI_BIN:-}"
if [[ -z "$bin" ]]; then
    if command -v lingxi >/dev/null 2>&1; then bin="$(command -v lingxi)"
    else
        # The newer of the release and debug builds.
        for b in "$repo/target/release/lingxi" "$repo/target/debug/lingxi"; do
            if [[ -x "$b" && ( -z "$bin" || "$b" -nt "$bin" ) ]]; then bin="$b"; fi
        done
    fi
    if [[ -z "$bin" ]]; then
        echo "no lingxi binary: run 'cargo build --release -p lingxi-node' in $repo or set LINGXI_BIN" >&2
        exit 1
    fi
fi

# The first admin's password, shared by the three nodes (whichever leads creates the admin):
# generated once into data/admin-password (mode 0600).
pwfile="$here/data/admin-password"
if [[ ! -s "$pwfile" ]]; then
    mkdir -p "$here/data"
    (umask 077; head -c 18 /dev/urandom | base64 | tr '+/' '-_' >"$pwfile")
fi
export LINGXI__AUTH__ADMIN_PASSWORD_FILE="$pwfile"

for n in 1 2 3; do
    pidf="$logs/node$n.pid"
    if [[ -f "$pidf" ]] && kill -0 "$(cat "$pidf")" 2>/dev/null; then
        echo "node$n already running (pid $(cat "$pidf"))"
        continue
    fi
    NO_COLOR=1 "$bin" run --config "$here/node$n.toml" >>"$logs/node$n.log" 2>&1 &
    echo $! >"$pidf"
    echo "node$n started (pid $!): SIP 127.0.0.1:516$n, HTTP http://127.0.0.1:818$n, Raft 127.0.0.1:716$n, log $logs/node$n.log"
done

# Wait (up to 20 s) until node1's API answers with a leader (the admin exists once one leads).
for _ in $(seq 1 100); do
    if token=$("$bin" auth login --api http://127.0.0.1:8181 --user admin <"$pwfile" 2>/dev/null) &&
        LINGXI_TOKEN="$token" "$bin" cluster status --api http://127.0.0.1:8181 2>/dev/null | grep -q '^leader: *node'; then
        LINGXI_TOKEN="$token" "$bin" cluster status --api http://127.0.0.1:8181
        break
    fi
    sleep 0.2
done

cat <<MSG

Token:   export LINGXI_TOKEN=\$($bin auth login --api http://127.0.0.1:8181 --user admin < $pwfile)
         (admin password: $pwfile; console: http://127.0.0.1:8181/console/)
Status:  $bin cluster status --api http://127.0.0.1:8182
Logs:    tail -f $logs/node*.log
Stop:    $here/start.sh stop        (or: kill \$(cat $logs/node*.pid))
MSG
