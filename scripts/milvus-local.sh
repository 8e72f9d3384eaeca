#!/usr/bin/env bash
# A throwaway single-node Milvus server on 127.0.0.1, for the tests and for trying facetrail's
# Milvus index back end (docs/milvus.md). It is never a production setup.
#
#   bash scripts/milvus-local.sh start DIR [PORT]   # prints the URI to use as FACETRAIL_MILVUS_URI
#   bash scripts/milvus-local.sh stop DIR
#
# The server is the standalone binary embedded in PyPI's `milvus` 2.3.5 wheel (the newest one
# with a Linux wheel), installed once into its own virtual environment, FACETRAIL_MILVUS_VENV
# (default ~/.cache/facetrail-milvus-venv): that wheel pins an old pymilvus, which facetrail's
# own client (current pymilvus) must not be downgraded to. Its data, logs and configuration
# live under DIR; `start` on a DIR that holds data starts the same server again.
#
# Every component of the server (etcd, the coordinators, the query, data and index nodes, the
# proxy, the metrics endpoint) listens on all interfaces, `*:PORT`, whatever its `ip:` says:
# 2.3.5 uses `ip:` only as the address it advertises (seen with `ss -ltnp`). So the server runs
# in a network namespace of its own holding nothing but a loopback interface (`unshare -n`,
# which needs root), with every address in its configuration on 127.0.0.1, and
# scripts/loopback-forward.py, in the host's namespace, listens on 127.0.0.1:PORT and relays
# each connection to the proxy inside. `start` then checks with `ss -ltnp` that, in the host's
# namespace, the server's process listens on nothing and the forwarder on 127.0.0.1 only, and
# stops both and fails otherwise. See the server's own listeners with
# `nsenter -t "$(cat DIR/milvus.pid)" -n ss -ltnp`.
set -euo pipefail

usage() { echo "usage: $0 start DIR [PORT] | stop DIR" >&2; exit 2; }
[ $# -ge 2 ] || usage
action=$1
dir=$(mkdir -p "$2" && cd "$2" && pwd)
venv=${FACETRAIL_MILVUS_VENV:-$HOME/.cache/facetrail-milvus-venv}
pidfile=$dir/milvus.pid
forwarder=$(cd "$(dirname "$0")" && pwd)/loopback-forward.py

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

running() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

ensure_venv() {
    if "$venv/bin/python" -c 'import milvus, sys; sys.exit(milvus.__version__ != "2.3.5")' \
        2>/dev/null; then
        return
    fi
    echo "installing the Milvus 2.3.5 server into $venv (about a minute, 480 MB)" >&2
    python3 -m venv "$venv"
    # The wheel's launcher needs pkg_resources (setuptools < 70) and marshmallow 3.
    "$venv/bin/python" -m pip install --quiet milvus==2.3.5 'pymilvus<2.4' 'setuptools<70' \
        'marshmallow<4' >&2
}

# Loopback-only listeners of the process PID, or fail listing the others.
check_listeners() {
    local pid=$1 others
    others=$(ss -ltnpH | grep "pid=$pid," | awk '{print $4}' | grep -v '^127\.0\.0\.1:' || true)
    if [ -n "$others" ]; then
        echo "listening off loopback: $others" >&2
        return 1
    fi
}

stop_server() {
    if [ -f "$dir/forward.pid" ]; then
        kill -TERM "$(cat "$dir/forward.pid")" 2>/dev/null || true
        rm -f "$dir/forward.pid"
    fi
    running || { rm -f "$pidfile"; return 0; }
    local pid
    pid=$(cat "$pidfile")
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.2
    done
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$pidfile"
}

case $action in
start)
    port=${3:-$(free_port)}
    if running; then
        cat "$dir/uri"
        exit 0
    fi
    ensure_venv
    # The wheel's own configuration machinery picks the ports (inside the namespace: the
    # first free one from each default) and the data paths under DIR, from a template that is
    # the wheel's with every address on loopback. A template of one's own loses the wheel's
    # glog configuration file, which is set back by hand.
    ports=$("$venv/bin/python" - "$dir" <<'EOF'
import re, sys
from os.path import dirname, join
import milvus

data_dir = sys.argv[1]
shipped = join(dirname(milvus.__file__), "data")
text = open(join(shipped, "config.yaml.template"), encoding="utf-8").read()
text = re.sub(r"(?m)^(\s*)ip:.*$", r"\1ip: 127.0.0.1", text)
text = text.replace("localhost", "127.0.0.1")
template = join(data_dir, "milvus.yaml.template")
open(template, "w", encoding="utf-8").write(text)
config = milvus.MilvusServerConfig(template=template, data_dir=data_dir)
config.glog_conf_file = join(shipped, "glog.conf")
config.resolve()
milvus._initialize_data_files(data_dir)
metrics, sock = config.resolve_port(9091)
sock.close()
print(metrics, config.get("proxy_port"))
EOF
)
    read -r metrics inner <<<"$ports"
    mkdir -p "$dir/logs" "$dir/run"
    (
        cd "$dir"
        DEPLOY_MODE=STANDALONE METRICS_PORT=$metrics MILVUS_RUN_DIR=$dir/run \
            LD_LIBRARY_PATH=$dir/bin${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} \
            setsid unshare -n sh -c 'ip link set lo up && exec "$0" run standalone' \
            "$dir/bin/milvus" >"$dir/logs/milvus-stdout.log" 2>"$dir/logs/milvus-stderr.log" \
            </dev/null &
        echo $! >"$pidfile"
    )
    pid=$(cat "$pidfile")
    healthy=
    for _ in $(seq 1 600); do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "Milvus exited while starting; see $dir/logs" >&2
            tail -5 "$dir/logs/milvus-stderr.log" >&2 || true
            rm -f "$pidfile"
            exit 1
        fi
        if nsenter -t "$pid" -n python3 -c "import sys, urllib.request as u; sys.exit(b'OK' not in u.urlopen('http://127.0.0.1:$metrics/healthz', timeout=2).read())" 2>/dev/null; then
            healthy=1
            break
        fi
        sleep 0.2
    done
    if [ -z "$healthy" ]; then
        echo "Milvus did not answer within 2 minutes; see $dir/logs" >&2
        stop_server
        exit 1
    fi
    setsid python3 "$forwarder" "$pid" "$port" "$inner" >"$dir/logs/forward.log" 2>&1 \
        </dev/null &
    echo $! >"$dir/forward.pid"
    for _ in $(seq 1 50); do
        ss -ltnpH | grep -q "pid=$(cat "$dir/forward.pid")," && break
        sleep 0.1
    done
    if ss -ltnpH | grep -q "pid=$pid," || ! check_listeners "$(cat "$dir/forward.pid")"; then
        echo "the server or its forwarder listens off loopback; stopping them" >&2
        stop_server
        exit 1
    fi
    echo "http://127.0.0.1:$port" >"$dir/uri"
    cat "$dir/uri"
    ;;
stop)
    stop_server
    ;;
*) usage ;;
esac
