"""Tool call round trip (DESIGN §6: one call to a server tool, marginal).

    /usr/bin/python3 bench/tools.py MNT TMPDIR [CALLS] [RUNS]

Defines two global tools on the mounted securerfs at MNT, a server tool (a
Python line server) and an exec tool (/bin/cat), and runs R loops calling
each CALLS times in one run.  The marginal cost of a call is the run's
elapsed_ms (the daemon's own measure, from result.json) minus that of the
same loop without the call, divided by CALLS; the p50 over RUNS runs is
printed as "key value" lines for scripts/bench.  Run as the mount's owner.
"""
import json
import os
import statistics
import sys

SERVER = r'''
import json, sys
out = sys.stdout
for line in sys.stdin:
    req = json.loads(line)
    out.write('{"id":%d,"value":%s}\n' % (req["id"], json.dumps(req["args"]["x"])))
    out.flush()
'''


def write(path, text, flags=os.O_WRONLY | os.O_TRUNC):
    fd = os.open(path, flags, 0o644)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def run(mnt, s, code):
    write(os.path.join(mnt, "sessions", s, "input"), code)
    with open(os.path.join(mnt, "sessions", s, "result.json")) as f:
        r = json.load(f)
    if r["status"] != "ok":
        sys.exit("bench/tools.py: %s: %s" % (code, r["error"]))
    return r["elapsed_ms"]


def marginal_us(mnt, s, tool, calls, runs):
    base = "for (i in seq_len(%d)) NULL" % calls
    loop = "for (i in seq_len(%d)) %s(i)" % (calls, tool)
    run(mnt, s, loop)  # warm: starts the server, compiles the loop
    run(mnt, s, base)
    samples = []
    for _ in range(runs):
        samples.append((run(mnt, s, loop) - run(mnt, s, base)) * 1000.0 / calls)
    return statistics.median(samples), max(samples)


def main():
    mnt, tmp = sys.argv[1], sys.argv[2]
    calls = int(sys.argv[3]) if len(sys.argv) > 3 else 1000
    runs = int(sys.argv[4]) if len(sys.argv) > 4 else 5
    srv = os.path.join(tmp, "bench_tool_server.py")
    with open(srv, "w") as f:
        f.write(SERVER)
    create = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    write(os.path.join(mnt, "tools", "bench_server.json"), json.dumps({
        "description": "echo x", "args": {"x": "numeric"}, "mode": "server",
        "command": [sys.executable, srv]}), create)
    write(os.path.join(mnt, "tools", "bench_exec.json"), json.dumps({
        "description": "echo the arguments", "args": {"x": "numeric"}, "command": ["/bin/cat"]}), create)
    with open(os.path.join(mnt, "clone")) as f:
        s = f.read().strip()
    p50, worst = marginal_us(mnt, s, "bench_server", calls, runs)
    print("tool_server_us_p50 %.1f" % p50)
    print("tool_server_us_max %.1f" % worst)
    p50, worst = marginal_us(mnt, s, "bench_exec", max(calls // 10, 1), runs)
    print("tool_exec_us_p50 %.1f" % p50)
    print("tool_exec_us_max %.1f" % worst)
    os.rmdir(os.path.join(mnt, "sessions", s))


if __name__ == "__main__":
    main()
