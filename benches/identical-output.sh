#!/bin/bash
# Compares the Prometheus output of two sockwatch binaries on one fixed socket population,
# for refactors that must not change the output (issue 15). Needs root (a namespace).
#   benches/identical-output.sh OLD_BINARY NEW_BINARY
# Builds a namespace holding a listener, 200 established connections and 30 sockets bound
# but not connected, runs `sockwatch sample` from each binary in it, and diffs the two
# outputs with the values that measure time (sample duration, CPU) blanked.
set -euo pipefail
old=$1 new=$2
ns=sw-identical-$$
ip netns add "$ns"
trap 'kill %1 2>/dev/null; ip netns del "$ns"' EXIT
ip -n "$ns" link set lo up
ip netns exec "$ns" sysctl -qw net.ipv4.ip_local_port_range="40000 40999"
ip netns exec "$ns" python3 -c '
import socket, time
l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("127.0.0.1", 5000)); l.listen(512)
c = [socket.create_connection(("127.0.0.1", 5000)) for _ in range(200)]
a = [l.accept()[0] for _ in range(200)]
b = []
for _ in range(30):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); b.append(s)
open("/dev/stdout", "w").write("ready\n")
time.sleep(600)' &
sleep 1
strip() { grep -v -E '^sockwatch_(sample_duration|sample_cpu|source_duration|process_|scrape)' | sed -E 's/^(sockwatch_[a-z_]*seconds[a-z_]*)(\{[^}]*\})? .*/\1\2 T/'; }
ip netns exec "$ns" "$old" sample --munin.socket "" | strip > /tmp/sw-old.txt
ip netns exec "$ns" "$new" sample --munin.socket "" | strip > /tmp/sw-new.txt
if diff -u /tmp/sw-old.txt /tmp/sw-new.txt; then
    echo "identical: $(wc -l < /tmp/sw-new.txt) lines, $(grep -c '^# TYPE' /tmp/sw-new.txt) families"
else
    exit 1
fi
