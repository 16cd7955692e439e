"""Tools (DESIGN §3, docs/tools.md) through the mount: definitions in tools/
and sessions/N/tools/, calls from R to host programs in exec and server
mode, the daemon's checks, failures of tool processes, scoping, accounting.

Tool programs are small Python scripts written into each test's directory
and run with /usr/bin/python3; the SQLite ones work on a real database file
made by the test (the seed vignette's query_db and list_tables)."""
import errno
import json
import os
import sqlite3
import textwrap
import threading
import time

import pytest

import util
from util import expect_errno

PY = "/usr/bin/python3"
SHARED_OPTS = ("pool=2",)
SHARED_EXPECT = [r"time(d)? ?out", r"interrupt"]

# One program for the seed's two tools, both modes: exec reads one JSON
# object on stdin; "server" reads {"id","tool","args"} lines.
SQL_TOOL = r'''
import json, os, sqlite3, sys

def call(tool, args):
    tool = tool.replace("_server", "").replace("_exec", "")
    con = sqlite3.connect(os.environ["DB"])
    try:
        if tool == "list_tables":
            rows = con.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")
            return [r[0] for r in rows]
        if tool == "query_db":
            cur = con.execute('SELECT * FROM "%s" LIMIT %d' % (args["table"].replace('"', ''), int(args["limit"])))
            cols = [c[0] for c in cur.description]
            return [dict(zip(cols, r)) for r in cur]
        raise ValueError("unknown tool " + tool)
    finally:
        con.close()

if len(sys.argv) > 2 and sys.argv[2] == "server":
    for line in sys.stdin:
        req = json.loads(line)
        try:
            out = {"id": req["id"], "value": call(req["tool"], req["args"])}
        except Exception as e:
            out = {"id": req["id"], "error": str(e)}
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()
else:
    try:
        json.dump(call(sys.argv[1], json.load(sys.stdin)), sys.stdout)
    except Exception as e:
        sys.stderr.write("query failed: %s\n" % e)
        sys.exit(1)
'''

# A server: echo, add, sleep, and a counter of its own starts.
ECHO_SERVER = r'''
import json, sys, time
for line in sys.stdin:
    req = json.loads(line)
    a = req["args"]
    if req["tool"].startswith("add"):
        v = a["x"] + 1
    elif req["tool"].startswith("nap"):
        time.sleep(a["s"])
        v = a["s"]
    else:
        v = a
    sys.stdout.write(json.dumps({"id": req["id"], "value": v}) + "\n")
    sys.stdout.flush()
'''


def write_script(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return str(p)


def define(d, name, spec, scope=("tools",)):
    util.write_bytes(d.path(*scope, name + ".json"), json.dumps(spec),
                     os.O_WRONLY | os.O_CREAT | os.O_TRUNC)


def undefine(d, name, scope=("tools",)):
    os.unlink(str(d.path(*scope, name + ".json")))


def make_db(tmp_path):
    db = tmp_path / "data.db"
    con = sqlite3.connect(str(db))
    con.execute("CREATE TABLE people (name TEXT, age INTEGER)")
    con.executemany("INSERT INTO people VALUES (?, ?)", [("ann", 31), ("bob", 42), ("cy", 23)])
    con.execute("CREATE TABLE pets (name TEXT, kind TEXT)")
    con.execute("INSERT INTO pets VALUES ('rex', 'dog')")
    con.commit()
    con.close()
    return str(db)


def result(s, code):
    return s.result(code)


def assert_ok(r):
    assert r["status"] == "ok", r


# ---------------------------------------------------------------- the seed


@pytest.mark.parametrize("mode", ["exec", "server"])
def test_seed_query_db_and_list_tables(shared, tmp_path, mode):
    db = make_db(tmp_path)
    script = write_script(tmp_path, "sql.py", SQL_TOOL)
    suffix = "_" + mode
    extra = ["server"] if mode == "server" else []
    define(shared, "query_db" + suffix, {
        "description": "Query a database table by name",
        "args": {"table": "character", "limit": "numeric"},
        "command": [PY, script, "query_db"] + extra, "mode": mode, "env": {"DB": db}})
    define(shared, "list_tables" + suffix, {
        "description": "List available database tables", "args": {},
        "command": [PY, script, "list_tables"] + extra if mode == "exec" else [PY, script, "query_db", "server"],
        "mode": mode, "env": {"DB": db}})
    s = shared.clone()
    try:
        r = result(s, "list_tables%s()" % suffix)
        assert_ok(r)
        assert r["value"] == ["people", "pets"]
        r = result(s, 'd <- query_db%s("people", 2); c(nrow(d), d$age)' % suffix)
        assert_ok(r)
        assert r["value"] == [2, 31, 42]
        assert r["tool_calls"] == 1
        assert s.value('is.data.frame(d) && identical(names(d), c("name", "age"))') == "TRUE"
        # The tool's failure is an R error user code can catch.
        r = result(s, 'tryCatch(query_db%s("nope", 1), securerfs_tool_error = function(e) '
                      'paste("caught:", conditionMessage(e)))' % suffix)
        assert_ok(r)
        assert r["value"].startswith("caught:") and "no such table" in r["value"], r
        r = result(s, 'query_db%s("nope", 1)' % suffix)
        assert r["status"] == "error" and "no such table" in r["error"], r
        # The session's state survives tool errors.
        assert s.value("nrow(d)") == "2"
    finally:
        s.close()
        undefine(shared, "query_db" + suffix)
        undefine(shared, "list_tables" + suffix)


# ---------------------------------------------------------------- definitions


def test_definition_files(shared, tmp_path):
    spec = {"description": "cat", "args": {"x": ""}, "command": ["/bin/cat"]}
    define(shared, "deftest", spec)
    names = os.listdir(str(shared.path("tools")))
    assert "deftest.json" in names and ".errors" in names
    assert json.loads(shared.read("tools", "deftest.json")) == spec
    st = os.stat(str(shared.path("tools", "deftest.json")))
    assert st.st_size == len(json.dumps(spec))
    s = shared.clone()
    try:
        assert s.value('exists("deftest") && bindingIsLocked("deftest", as.environment("securerfs:tools"))') \
            == "TRUE"
        assert s.value("names(formals(deftest))") == "x"
        # rename: the function follows the file
        os.rename(str(shared.path("tools", "deftest.json")), str(shared.path("tools", "deftest2.json")))
        assert s.value('c(exists("deftest"), exists("deftest2"))') == "[1] FALSE  TRUE"
        r = s.result('deftest2(list(a = 1, b = "x"))')
        assert_ok(r)
        assert r["value"] == {"x": {"a": 1, "b": "x"}}
        expect_errno(errno.EINVAL, os.rename, str(shared.path("tools", "deftest2.json")),
                     str(shared.path("tools", "1bad.json")))
        expect_errno(errno.EXDEV, os.rename, str(shared.path("tools", "deftest2.json")),
                     str(s.p("tools") / "deftest2.json"))
        undefine(shared, "deftest2")
        assert "deftest2.json" not in os.listdir(str(shared.path("tools")))
        assert s.value('exists("deftest2")') == "FALSE"
        expect_errno(errno.ENOENT, util.read_text, shared.path("tools", "deftest2.json"))
        expect_errno(errno.EPERM, os.mkdir, str(shared.path("tools", "sub")))
        expect_errno(errno.EPERM, os.unlink, str(shared.path("tools", ".errors")))
    finally:
        s.close()


BAD_DEFINITIONS = [
    ("bad JSON", '{"description": "x", "args": {', "not JSON"),
    ("not an object", '[1, 2]', "JSON object"),
    ("missing field", '{"description": "x", "args": {}}', 'missing field "command"'),
    ("mistyped description", '{"description": 1, "args": {}, "command": ["/bin/cat"]}', "description"),
    ("unknown type", '{"description": "x", "args": {"a": "float"}, "command": ["/bin/cat"]}', "unknown type"),
    ("command not an array", '{"description": "x", "args": {}, "command": "/bin/cat"}', "non-empty array"),
    ("empty command", '{"description": "x", "args": {}, "command": []}', "non-empty array"),
    ("command of numbers", '{"description": "x", "args": {}, "command": ["/bin/cat", 1]}', "non-empty array"),
    ("bad mode", '{"description": "x", "args": {}, "command": ["/bin/cat"], "mode": "daemon"}', "mode"),
    ("bad timeout", '{"description": "x", "args": {}, "command": ["/bin/cat"], "timeout": -1}', "timeout"),
    ("bad env", '{"description": "x", "args": {}, "command": ["/bin/cat"], "env": {"A": 1}}', "env"),
    ("unknown field", '{"description": "x", "args": {}, "command": ["/bin/cat"], "comand": 1}', "unknown field"),
    ("bad argument name", '{"description": "x", "args": {"1a": ""}, "command": ["/bin/cat"]}', "argument"),
]


@pytest.mark.parametrize("what,text,reason", BAD_DEFINITIONS, ids=[b[0] for b in BAD_DEFINITIONS])
def test_bad_definition_keeps_the_old_one(shared, what, text, reason):
    name = "keep_" + what.replace(" ", "_")
    good = {"description": "good", "args": {"x": ""}, "command": ["/bin/cat"]}
    define(shared, name, good)
    path = shared.path("tools", name + ".json")
    expect_errno(errno.EINVAL, util.write_bytes, path, text)
    assert json.loads(shared.read("tools", name + ".json")) == good
    errors = [json.loads(line) for line in shared.read("tools", ".errors").splitlines()]
    mine = [e for e in errors if e["tool"] == name + ".json"]
    assert mine and reason in mine[-1]["error"], (reason, mine)
    assert set(mine[-1]) >= {"time", "tool", "error"}
    s = shared.clone()
    try:
        assert s.value("%s(42)$x" % name) == "42"
    finally:
        s.close()
        undefine(shared, name)


@pytest.mark.parametrize("name", ["1abc", "_x", "mean", "if", ".securerfs_x", "a-b", "x.txt"])
def test_bad_tool_names(shared, name):
    fn = name if name.endswith(".txt") else name + ".json"
    spec = json.dumps({"description": "x", "args": {}, "command": ["/bin/cat"]})
    expect_errno(errno.EINVAL, util.write_bytes, shared.path("tools", fn), spec,
                 os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    assert fn not in os.listdir(str(shared.path("tools")))
    assert fn in shared.read("tools", ".errors")


def test_new_file_refused_leaves_nothing(shared):
    expect_errno(errno.EINVAL, util.write_bytes, shared.path("tools", "newbad.json"), "{",
                 os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    assert "newbad.json" not in os.listdir(str(shared.path("tools")))


# ---------------------------------------------------------------- argument checks


def test_type_checks_r_side_and_daemon_side(shared, tmp_path):
    define(shared, "typed", {"description": "types", "command": ["/bin/cat"], "args": {
        "c": "character", "n": "numeric", "i": "integer", "l": "logical", "li": "list",
        "df": "data.frame", "any": ""}})
    s = shared.clone()
    try:
        good = 'typed(c("a", NA), 1.5, 2, c(TRUE, NA), list(1, "a"), data.frame(x = 1:2), NULL)'
        r = s.result("x <- " + good + "; x")
        assert_ok(r)
        assert r["value"]["c"] == ["a", None] and r["value"]["i"] == 2
        assert s.value("is.data.frame(x$df) && nrow(x$df) == 2") == "TRUE"
        # R side: a clear R error, classed.
        for call, arg, typ in [
            ('typed(1, 1, 1, TRUE, list(), data.frame(), 1)', "c", "character"),
            ('typed("a", "1", 1, TRUE, list(), data.frame(), 1)', "n", "numeric"),
            ('typed("a", 1, 1.5, TRUE, list(), data.frame(), 1)', "i", "integer"),
            ('typed("a", 1, 1, "yes", list(), data.frame(), 1)', "l", "logical"),
            ('typed("a", 1, 1, TRUE, 1, data.frame(), 1)', "li", "list"),
            ('typed("a", 1, 1, TRUE, list(), list(), 1)', "df", "data.frame"),
        ]:
            r = s.result('tryCatch(%s, securerfs_tool_argument_error = function(e) conditionMessage(e))' % call)
            assert_ok(r)
            assert r["value"].startswith('argument "%s" must be %s' % (arg, typ)), r
        r = s.result('typed("a")')
        assert r["status"] == "error" and "missing" in r["error"], r
        # Daemon side: the JSON that arrives is checked again.  The R
        # wrapper's internal entry point is reachable from user code (it is
        # no boundary), so a hostile caller can skip the R checks: the
        # daemon must refuse what the wrapper would have.
        native = 'native <- environment(body(typed)[[1]])$tool_call_native; '
        for args, want in [
            ('{"c": 1, "n": 1, "i": 1, "l": true, "li": [], "df": [], "any": 1}', 'argument "c" must be character'),
            ('{"c": "a", "n": "1", "i": 1, "l": true, "li": [], "df": [], "any": 1}', 'argument "n" must be numeric'),
            ('{"c": "a", "n": 1, "i": 1.5, "l": true, "li": [], "df": [], "any": 1}', 'argument "i" must be integer'),
            ('{"c": "a", "n": 1, "i": 1, "l": 1, "li": [], "df": [], "any": 1}', 'argument "l" must be logical'),
            ('{"c": "a", "n": 1, "i": 1, "l": true, "li": 1, "df": [], "any": 1}', 'argument "li" must be list'),
            ('{"c": "a", "n": 1, "i": 1, "l": true, "li": [], "df": [1], "any": 1}',
             'argument "df" must be data.frame'),
            ('{"c": "a", "n": 1, "i": 1, "l": true, "li": [], "df": []}', 'argument "any" is missing'),
            ('{"c": "a", "n": 1, "i": 1, "l": true, "li": [], "df": [], "any": 1, "zz": 2}',
             'unknown argument "zz"'),
        ]:
            r = s.result(native + ".Call(native, 'typed', '%s')" % args)
            assert_ok(r)
            assert r["value"][0] == 2 and want in r["value"][1], (args, r)
        r = s.result(native + ".Call(native, 'no_such_tool', '{}')")
        assert r["value"][0] == 2 and 'unknown tool "no_such_tool"' in r["value"][1], r
        # Ids and the run are the worker's to keep: a call still works after.
        r = s.result(good)
        assert_ok(r)
    finally:
        s.close()
        undefine(shared, "typed")


# ---------------------------------------------------------------- failing tools


def test_failing_exec_tools(shared, tmp_path):
    hang = write_script(tmp_path, "hang.py", "import time\ntime.sleep(100)\n")
    crash = write_script(tmp_path, "crash.py", "import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)\n")
    flood = write_script(tmp_path, "flood.py", "import sys\nsys.stdout.write('x' * (2 << 20))\n")
    text = write_script(tmp_path, "text.py", "print('hello, not JSON')\n")
    fail = write_script(tmp_path, "fail.py", "import sys\nsys.stderr.write('it went wrong\\n')\nsys.exit(3)\n")
    for name, cmd, extra in [("t_hang", [PY, hang], {"timeout": 0.5}), ("t_crash", [PY, crash], {}),
                             ("t_flood", [PY, flood], {}), ("t_text", [PY, text], {}),
                             ("t_fail", [PY, fail], {}), ("t_missing", ["/nonexistent/tool"], {}),
                             ("t_nopath", ["no-such-program-xyz"], {})]:
        define(shared, name, dict({"description": name, "args": {}, "command": cmd}, **extra))
    s = shared.clone()
    try:
        s.run("x <- 7")
        t0 = time.monotonic()
        r = s.result("t_hang()")
        assert r["status"] == "error" and "timeout of 0.5 s" in r["error"], r
        assert time.monotonic() - t0 < 5
        r = s.result("t_crash()")
        assert r["status"] == "error" and "signal 11" in r["error"], r
        r = s.result("t_flood()")
        assert r["status"] == "error" and "over 1 MiB" in r["error"], r
        r = s.result("t_text()")
        assert_ok(r)
        assert r["value"] == "hello, not JSON"
        r = s.result("t_fail()")
        assert r["status"] == "error" and "it went wrong" in r["error"], r
        r = s.result("t_missing()")
        assert r["status"] == "error" and "cannot run /nonexistent/tool" in r["error"], r
        r = s.result("t_nopath()")
        assert r["status"] == "error" and "cannot run no-such-program-xyz" in r["error"], r
        assert s.value("x") == "7"
    finally:
        s.close()
        for name in ["t_hang", "t_crash", "t_flood", "t_text", "t_fail", "t_missing", "t_nopath"]:
            undefine(shared, name)


def test_memory_bounds_the_tool_process(shared, tmp_path):
    """A definition's "memory" is its process's address space (RLIMIT_AS,
    soft and hard): a program that allocates past it fails there, on the
    host, and the call is the tool's error; the same program with room, or
    with no "memory", runs.  Seen from outside: the limit in the tool
    process's /proc/PID/limits while it runs."""
    alloc = write_script(tmp_path, "alloc.py", "import sys\nb = bytearray(int(sys.argv[1]) << 20)\nprint('true')\n")
    peek = write_script(tmp_path, "peek.py", "import json\nprint(json.dumps([l for l in open('/proc/self/limits') "
                                               "if l.startswith('Max address space')][0].split()[3:5]))\n")
    define(shared, "t_big", {"description": "", "args": {}, "command": [PY, alloc, "400"], "memory": 256 << 20})
    define(shared, "t_small", {"description": "", "args": {}, "command": [PY, alloc, "16"], "memory": 256 << 20})
    define(shared, "t_free", {"description": "", "args": {}, "command": [PY, alloc, "400"]})
    define(shared, "t_peek", {"description": "", "args": {}, "command": [PY, peek], "memory": 256 << 20})
    s = shared.clone()
    try:
        r = s.result("t_big()")
        assert r["status"] == "error" and "MemoryError" in r["error"], r
        assert s.result("t_small()")["value"] is True
        assert s.result("t_free()")["value"] is True
        assert s.result("t_peek()")["value"] == [str(256 << 20)] * 2
    finally:
        s.close()
        for name in ["t_big", "t_small", "t_free", "t_peek"]:
            undefine(shared, name)
    # Refused at the definition: not a whole number of bytes, or too small.
    for bad in (1000, "1G", 2.5e8):
        util.expect_errno(errno.EINVAL, define, shared, "t_bad",
                          {"description": "", "args": {}, "command": [PY, alloc, "1"], "memory": bad})


def test_run_timeout_while_waiting_for_a_tool(shared, tmp_path):
    hang = write_script(tmp_path, "hang.py", "import time\ntime.sleep(100)\n")
    define(shared, "slow_exec", {"description": "", "args": {}, "command": [PY, hang], "timeout": 60})
    srv = write_script(tmp_path, "srv.py", ECHO_SERVER)
    define(shared, "nap_srv", {"description": "", "args": {"s": "numeric"}, "command": [PY, srv],
                               "mode": "server", "timeout": 60})
    define(shared, "add_srv", {"description": "", "args": {"x": "numeric"}, "command": [PY, srv],
                               "mode": "server"})
    s = shared.clone()
    try:
        s.run("x <- 5")
        s.write("timeout", "1")
        t0 = time.monotonic()
        r = s.result("slow_exec()")
        assert r["status"] == "timeout", r
        assert time.monotonic() - t0 < 4
        assert s.value("x") == "5"
        # A server reply that comes after the run ended is dropped.
        r = s.result("nap_srv(1.5)")
        assert r["status"] == "timeout", r
        s.write("timeout", "30")
        time.sleep(1)
        r = s.result("c(add_srv(1), nap_srv(0))")
        assert_ok(r)
        assert r["value"] == [2, 0]
        # ctl interrupt during a call
        s.submit("nap_srv(5)")
        time.sleep(0.3)
        s.write("ctl", "interrupt")
        r = s.result()
        assert r["status"] == "error" and "Interrupted" in r["error"], r
        assert s.value("add_srv(x)") == "6"
    finally:
        s.close()
        for n in ["slow_exec", "nap_srv", "add_srv"]:
            undefine(shared, n)


def test_server_dies_and_restarts(shared, tmp_path):
    srv = write_script(tmp_path, "die.py", r'''
        import json, os, sys
        for line in sys.stdin:
            req = json.loads(line)
            if req["args"]["die"]:
                sys.stderr.write("server going down\n")
                sys.exit(4)
            sys.stdout.write(json.dumps({"id": req["id"], "value": os.getpid()}) + "\n")
            sys.stdout.flush()
        ''')
    define(shared, "dier", {"description": "", "args": {"die": "logical"}, "command": [PY, srv],
                            "mode": "server"})
    s = shared.clone()
    try:
        pid1 = int(s.value("dier(FALSE)"))
        r = s.result("dier(TRUE)")
        assert r["status"] == "error" and "server going down" in r["error"], r
        pid2 = int(s.value("dier(FALSE)"))
        assert pid1 != pid2
    finally:
        s.close()
        undefine(shared, "dier")


# ---------------------------------------------------------------- server load


def test_server_tool_1000_calls_in_one_run(shared, tmp_path):
    srv = write_script(tmp_path, "srv.py", ECHO_SERVER)
    define(shared, "add_k", {"description": "", "args": {"x": "numeric"}, "command": [PY, srv],
                             "mode": "server"})
    s = shared.clone()
    try:
        r = s.result("s <- 0; for (i in 1:1000) s <- s + add_k(i); s")
        assert_ok(r)
        assert r["value"] == sum(range(2, 1002))
        assert r["tool_calls"] == 1000
        # The 1001st call of a run is refused (max_tool_calls, default 1000).
        r = s.result("for (i in 1:1001) add_k(i)")
        assert r["status"] == "error" and "max_tool_calls" in r["error"], r
        assert s.value("i") == "1001"
        st = shared.json("stats")
        assert st["tool_calls"] >= 2001
    finally:
        s.close()
        undefine(shared, "add_k")


def test_max_tool_calls_option(daemons, tmp_path):
    d = daemons.start("pool=0", "max_tool_calls=3")
    assert d.json("config")["max_tool_calls"] == 3
    define(d, "cat3", {"description": "", "args": {"x": ""}, "command": ["/bin/cat"]})
    s = d.clone()
    assert s.value("for (i in 1:3) cat3(i); i") == "3"
    r = s.result("for (i in 1:4) cat3(i)")
    assert r["status"] == "error" and "more than 3 tool calls" in r["error"], r
    s.close()


def test_several_sessions_get_a_server_each(shared, tmp_path):
    srv = write_script(tmp_path, "srv.py", ECHO_SERVER)
    define(shared, "add_c", {"description": "", "args": {"x": "numeric"}, "command": [PY, srv],
                             "mode": "server"})
    sessions = [shared.clone() for _ in range(4)]
    results, errors = {}, []

    def work(k, s):
        try:
            results[k] = s.result("s <- 0; for (i in 1:300) s <- s + add_c(i * %d); s" % (k + 1))
        except Exception as e:  # noqa: B902 - reported below
            errors.append(e)

    try:
        threads = [threading.Thread(target=work, args=(k, s)) for k, s in enumerate(sessions)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors
        for k in range(4):
            assert_ok(results[k])
            assert results[k]["value"] == sum(i * (k + 1) + 1 for i in range(1, 301))
        # A server per calling session (docs/tools.md: no session's call
        # waits behind another's), each used for all 300 of its calls.
        servers = [p for p in util.descendants(shared.pid) if srv in util.proc_cmdline(p[0])]
        assert len(servers) == 4, servers
    finally:
        for s in sessions:
            s.close()
        undefine(shared, "add_c")
    # Their sessions and their last tool are gone: the servers end.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(srv in util.proc_cmdline(p[0])
                                              for p in util.descendants(shared.pid)):
        time.sleep(0.05)
    assert not any(srv in util.proc_cmdline(p[0]) for p in util.descendants(shared.pid))


# ---------------------------------------------------------------- scoping


def test_session_scope_hides_global(shared, tmp_path):
    define(shared, "which_one", {"description": "", "args": {}, "command": ["/bin/echo", '"global"']})
    a, b = shared.clone(), shared.clone()
    try:
        assert a.value("which_one()") == "global"
        define(shared, "which_one", {"description": "", "args": {}, "command": ["/bin/echo", '"session"']},
               scope=("sessions", a.name, "tools"))
        define(shared, "only_a", {"description": "", "args": {}, "command": ["/bin/echo", "1"]},
               scope=("sessions", a.name, "tools"))
        assert os.listdir(str(a.p("tools"))) == [".errors", "which_one.json", "only_a.json"] or \
            sorted(os.listdir(str(a.p("tools")))) == [".errors", "only_a.json", "which_one.json"]
        assert a.value("which_one()") == "session"
        assert b.value("which_one()") == "global"
        assert b.value('exists("only_a")') == "FALSE"
        assert a.value("only_a()") == "1"
        # The session's own file removed: the global one shows again.
        undefine(shared, "which_one", scope=("sessions", a.name, "tools"))
        assert a.value("which_one()") == "global"
        # A session's tools go with it.
        a.close()
        assert b.value('exists("only_a")') == "FALSE"
    finally:
        a.close()
        b.close()
        undefine(shared, "which_one")


def test_changes_during_a_run_come_before_the_next(shared, tmp_path):
    define(shared, "gone_soon", {"description": "", "args": {}, "command": ["/bin/echo", "1"]})
    s = shared.clone()
    try:
        assert s.value("gone_soon()") == "1"
        s.submit('Sys.sleep(1); c(exists("gone_soon"), exists("new_one"), '
                 'tryCatch(gone_soon(), error = function(e) conditionMessage(e)))')
        time.sleep(0.3)
        undefine(shared, "gone_soon")
        define(shared, "new_one", {"description": "", "args": {}, "command": ["/bin/echo", "2"]})
        r = s.result()
        assert_ok(r)
        # Still bound in R during the run, but the daemon refuses the call.
        assert r["value"][:2] == ["TRUE", "FALSE"], r
        assert 'unknown tool "gone_soon"' in r["value"][2], r
        assert s.value('c(exists("gone_soon"), exists("new_one"))') == "[1] FALSE  TRUE"
        assert s.value("new_one()") == "2"
    finally:
        s.close()
        undefine(shared, "new_one")


def test_new_session_and_restart_get_tools(shared):
    define(shared, "pre", {"description": "", "args": {}, "command": ["/bin/echo", "3"]})
    s = shared.clone()
    try:
        assert s.value("pre()") == "3"
        s.write("ctl", "restart")
        assert s.value("pre()") == "3"
    finally:
        s.close()
        undefine(shared, "pre")


# ---------------------------------------------------------------- accounting


def test_accounting(shared):
    define(shared, "acct", {"description": "", "args": {"x": ""}, "command": ["/bin/cat"]})
    s = shared.clone()
    try:
        before = shared.json("stats")["tool_calls"]
        r = s.result('acct(strrep("a", 3000)); tryCatch(acct(), error = function(e) 1); '
                     'environment(body(acct)[[1]])$tool_call_native -> f; .Call(f, "nope", "{}"); 0')
        assert_ok(r)
        assert r["tool_calls"] == 2
        assert shared.json("stats")["tool_calls"] == before + 2
        events = [json.loads(line) for line in s.read("log").splitlines()]
        calls = [e for e in events if e["event"] == "tool_call"]
        assert len(calls) == 2, calls
        assert calls[0]["tool"] == "acct" and calls[0]["status"] == "ok"
        assert len(calls[0]["args"]) <= 1024 and calls[0]["args"].startswith('{"x":"aaa')
        assert isinstance(calls[0]["elapsed_ms"], (int, float))
        assert calls[1]["tool"] == "nope" and calls[1]["status"] == "error"
        assert "unknown tool" in calls[1]["error"]
    finally:
        s.close()
        undefine(shared, "acct")
