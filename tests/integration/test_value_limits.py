"""A run's value is presented within the run's rules, and R's own C stack
check works in the worker.

- Formatting keeps only what is shown (50 lines, 30 rows, 1 MiB): print()
  is stopped at the first line past the budget, whatever prints (print.default,
  a print method, S4 show(), cat()), and R's state is left clean (sinks,
  options, on.exit code of the interrupted method).
- value.json is bounded in size (4 MiB), depth (200) and time (2 s of
  jsonlite), with a value_note when it is cut or skipped.
- A value that cannot be formatted by the run's deadline ends the run as a
  timeout with the session's state kept: never killed, never ok with a
  placeholder.
- Deep recursion and deeply nested values end with an R error (or a
  value_note), not a crash, at the default stack limit and at a small one.
"""
import json
import time

import pytest

import util

SHARED_OPTS = ("pool=0",)
SHARED_EXPECT = [r"time(d)? ?out", r"interrupt"]

JSONLITE = ("as.character(jsonlite::toJSON(v, auto_unbox = TRUE, na = 'null', digits = NA,"
            " null = 'null', dataframe = 'rows'))")
NEST = "n{d} <- 1; for (i in seq_len({d})) n{d} <- list(n{d})"
RECURSE = "f <- function(n) if (n > 0) f(n - 1) else 0"
MIB = 1 << 20


def lines(out):
    return out.rstrip("\n").split("\n")


def timed_result(s, code):
    """Run code; (result.json, seconds from write to result)."""
    t0 = time.monotonic()
    s.submit(code)
    r = s.result()
    return r, time.monotonic() - t0


def set_timeout(s, seconds):
    s.write("timeout", "%g" % seconds)


def expect_timeout_state_kept(s, code, timeout):
    """A run that ends in a timeout, with the state kept (a worker that was
    killed and replaced would have lost kept)."""
    s.run("kept <- 42")
    set_timeout(s, timeout)
    r, took = timed_result(s, code)
    set_timeout(s, 30)
    assert r["status"] == "timeout", r
    assert "state is kept" in r["error"], r
    assert r["value"] is None and s.read("output") == ""
    assert took < util.scaled(timeout + 10), took
    assert s.run("kept") == "42\n"


# ---------------------------------------------------------------- text


@pytest.mark.timeout_s(90)
def test_million_element_list_is_cut_at_once(sess):
    # Before: print() and the JSON of every element, seconds per 10^4
    # elements; the run was killed at its timeout and the state lost.
    r, took = timed_result(sess, "as.list(1:1e6)")
    assert r["status"] == "ok", r
    out = lines(sess.read("output"))
    assert len(out) == 51 and out[-1] == "... (output truncated)", out[-3:]
    assert out[:3] == ["[[1]]", "[1] 1", ""]
    assert r["value"] is None and "over 4 MiB" in r["value_note"], r.get("value_note")
    assert took < util.scaled(5), took
    # The formatting alone, of a value that exists already.
    sess.run("big <- as.list(1:1e6); 1")
    r, took = timed_result(sess, "big")
    assert r["status"] == "ok" and len(lines(sess.read("output"))) == 51
    assert took < util.scaled(2), took


def test_twenty_thousand_elements_within_a_one_second_timeout(sess):
    set_timeout(sess, 1)
    try:
        r = sess.result("as.list(1:20000)")
    finally:
        set_timeout(sess, 30)
    assert r["status"] == "ok", r
    assert lines(sess.read("output"))[-1] == "... (output truncated)"
    # Its JSON (about 110 KB) is made in C.
    assert r["value"] == list(range(1, 20001))


@pytest.mark.timeout_s(90)
def test_million_row_data_frame(sess):
    sess.run("d <- data.frame(a = 1:1e6, b = rep(c(0.5, 1.25), 5e5), s = 'x'); 1")
    r, took = timed_result(sess, "d")
    assert r["status"] == "ok", r
    out = lines(sess.read("output"))
    assert len(out) == 32 and out[-1] == "... (1000000 rows total)", out[-3:]
    assert out[0].split() == ["a", "b", "s"] and out[30].split() == ["30", "30", "1.25", "x"]
    assert r["value"] is None and "over 4 MiB" in r["value_note"]
    assert took < util.scaled(2), took


def test_wide_data_frame_is_cut_at_50_lines(sess):
    out = lines(sess.run("as.data.frame(matrix(1:4000, 40, 100))"))
    assert len(out) == 52, len(out)
    assert out[-2:] == ["... (output truncated)", "... (40 rows total)"]


def test_text_of_values_that_fit_is_print_output(sess):
    # What fits is exactly print()'s output (as capture.output() gives it).
    for code in ("list(a = 1, b = 'x')", "1:120", "matrix(1:20, 4)", "factor(c('a', 'b', 'a'))",
                 "y ~ x + z", "function(x) x + 1", "summary(c(1, 2, 3, 10))",
                 "list(list(1, 2), c(a = 1))", "data.frame(a = 1:3, b = c('x', 'y', 'z'))"):
        sess.run("v <- " + code)
        want = sess.run("paste(utils::capture.output(print(v)), collapse = '\\n')")
        got = sess.run("v")
        assert got.rstrip("\n") == want.rstrip("\n"), code


def test_line_budget_edges(sess):
    # The same rules as worker.R's fallback (tests/unit/test_format.R), here
    # through the worker's capture: empty lines past line 50 only count if
    # text follows them; a last line without a newline is a line.
    sess.run("print.emit <- function(x, ...) cat(x[[1L]]); emit <- function(t) structure(list(t), class = 'emit');"
             " fifty <- paste0('l', 1:50, '\\n', collapse = '')")
    first50 = ["l%d" % i for i in range(1, 51)]
    assert lines(sess.run("emit(paste0(fifty, '\\n\\n\\n'))")) == first50
    assert lines(sess.run("emit(paste0(fifty, '\\n\\nl53\\n'))")) == first50 + ["... (output truncated)"]
    out = lines(sess.run("emit(paste0(paste0('l', 1:45, '\\n', collapse = ''), strrep('\\n', 6), 'x'))"))
    assert out == first50[:45] + [""] * 5 + ["... (output truncated)"]
    assert sess.run("emit('no newline at the end')") == "no newline at the end\n"
    # Empty lines without end: given up on after a few thousand.
    r, took = timed_result(sess, "emit(paste0(fifty, strrep('\\n', 1e6)))")
    assert lines(sess.read("output")) == first50 + ["... (output truncated)"]
    assert took < util.scaled(5)


def test_s4_environment_and_long_string(sess):
    out = sess.run('setClass("P", representation(a = "numeric")); new("P", a = 1:3)')
    assert lines(out) == ['An object of class "P"', 'Slot "a":', "[1] 1 2 3"]
    r = sess.result()
    assert r["value"] is None and "S4" in r["value_note"]
    out = sess.run("setMethod('show', 'P', function(object) for (i in 1:1e6) cat('P', i, '\\n')); new('P')")
    assert lines(out)[-1] == "... (output truncated)" and lines(out)[49] == "P 50 "
    assert sess.run("new.env()").startswith("<environment: ")
    # A length-one string is as.character(): cut at 1 MiB with the marker.
    out = sess.run("strrep('a', 1e7)")
    assert out.startswith("a" * 1000) and out.endswith("\n... (output truncated)\n")
    assert MIB <= len(out) < MIB + 100
    # Two long strings: print() pads and quotes them; the kept part is 1 MiB.
    r = sess.result("c(strrep('b', 3e6), 'c')")
    assert r["status"] == "ok" and r["value"][1] == "c"
    out = sess.read("output")
    assert out.startswith('[1] "bbbb') and MIB <= len(out) < MIB + 100


def test_print_method_that_never_stops_printing(sess):
    sess.run("print.chatty <- function(x, ...) { i <- 0; repeat { i <- i + 1; cat('line', i, '\\n') } }")
    r, took = timed_result(sess, "structure(list(), class = 'chatty')")
    assert r["status"] == "ok", r
    out = lines(sess.read("output"))
    assert len(out) == 51 and out[49] == "line 50 " and out[50] == "... (output truncated)"
    assert took < util.scaled(5)


def test_cut_print_leaves_r_state_clean(sess):
    # The method's on.exit() runs, its options() are put back, no sink or
    # connection is left behind, and the method's own tryCatch() cannot
    # catch the stop.
    sess.run("""
print.tidy <- function(x, ...) {
    op <- options(digits = 3)
    on.exit({ options(op); cleaned <<- TRUE })
    con <- textConnection("tc_out", "w", local = TRUE)
    on.exit(close(con), add = TRUE)
    tryCatch(for (i in 1:1e5) { writeLines("x", con); cat(i, "\\n") },
             error = function(e) caught <<- TRUE, condition = function(c) caught <<- TRUE)
}
cleaned <- FALSE; caught <- FALSE; n_con <- nrow(showConnections())""")
    out = lines(sess.run("structure(list(), class = 'tidy')"))
    assert out[-1] == "... (output truncated)" and len(out) == 51
    assert sess.run("c(cleaned, caught)") == "[1]  TRUE FALSE\n"
    assert sess.run("getOption('digits')") == "7\n"
    assert sess.run("c(sink.number(), nrow(showConnections()) - n_con)") == "[1] 0 0\n"
    # Printing still works, and console output of the run is unaffected.
    assert sess.run("cat('to console\\n'); 1:3") == "[1] 1 2 3\n"
    assert sess.read("console") == "to console\n"


def test_value_printed_past_a_users_sink(sess):
    path = "sunk.txt"
    sess.run("sink(%r); cat('into the sink\\n'); 1" % path)
    try:
        assert sess.run("1:3") == "[1] 1 2 3\n"
        assert sess.run("as.list(1:100)").rstrip("\n").endswith("... (output truncated)")
        assert sess.run("sink.number()") == "1\n"
    finally:
        sess.run("sink(); 0")
    assert (sess.dir / "files" / path).read_text() == "into the sink\n"


def test_print_method_error_gives_placeholder(sess):
    sess.run("print.bad <- function(x, ...) { cat('partial\\n'); stop('no printing') }")
    r = sess.result("structure(list(), class = 'bad')")
    assert r["status"] == "ok"
    assert sess.read("output") == "<value could not be printed: no printing>\n"


# ---------------------------------------------------------------- deadline


@pytest.mark.timeout_s(60)
def test_print_method_that_loops_ends_in_timeout(sess):
    sess.run("print.loop <- function(x, ...) repeat {}")
    expect_timeout_state_kept(sess, "structure(list(), class = 'loop')", 1)


@pytest.mark.timeout_s(60)
def test_deadline_during_slow_print_keeps_state(sess):
    sess.run("print.slow <- function(x, ...) { Sys.sleep(5); cat('slow\\n') }")
    expect_timeout_state_kept(sess, "Sys.sleep(0.8); structure(list(), class = 'slow')", 1)


@pytest.mark.timeout_s(90)
def test_deadline_during_json_keeps_state(sess):
    # 10^5 Dates: jsonlite needs seconds; the deadline comes first.
    sess.run("dates <- rep(list(as.Date('2024-03-05')), 1e5); 1")
    expect_timeout_state_kept(sess, "Sys.sleep(0.5); dates", 1)


# ---------------------------------------------------------------- value.json


@pytest.mark.parametrize("code", [
    "list(a = 1, b = 'x', c = NULL, d = NA, e = c(1.5, NA, Inf), f = character(0))",
    "list(1L, list(TRUE, FALSE, NA), setNames(list(), character(0)), list())",
    "list(x = factor(c('a', NA, 'b')), y = factor('z', levels = c('z', 'w')), o = ordered('lo'))",
    "list(0.1 + 0.2, 1/3, 1e20, -0.5, 2^53, 123456789012)",
    "list('\\u00e9\\n\\t\"\\\\', c(a = 'named', b = 'vector'))",
    "data.frame(a = c(NA, 1L), f = factor(c('x', NA)), l = c(TRUE, NA), s = c(NA, 'y'), d = c(NaN, 2.5))",
    "data.frame()",
    "data.frame(a = 1:3)[2:3, , drop = FALSE]",
    "list(df = data.frame(a = 1:2), l = list(list(list(1))))",
    # jsonlite's own (not the C encoder): duplicated or missing names,
    # character row names, Dates, matrices
    "list(a = 1, a = 2, 3)",
    "list(a = 1, a = 2)",
    "data.frame(a = 1:2, row.names = c('r1', 'r2'))",
    "list(as.Date('2024-03-05'), matrix(1:4, 2))",
])
def test_value_json_is_jsonlites(sess, code):
    r = sess.result("v <- " + code)
    assert r["status"] == "ok", r
    got = json.loads(sess.read("value.json"))
    assert got == r["value"]
    want = json.loads(sess.value(JSONLITE))
    assert got == want, (got, want)


def test_value_json_size_is_bounded_before_conversion(sess):
    r = sess.result("as.list(seq_len(3e6))")
    assert r["value"] is None and r["value_note"].startswith("value JSON over 4 MiB")
    r = sess.result("rep(list(strrep('x', 1000)), 5000)")  # 5 MB
    assert r["value"] is None and "over 4 MiB" in r["value_note"]
    # A bit under the cap is converted whole.
    r = sess.result("rep(list(strrep('x', 1000)), 3000)")
    assert r["status"] == "ok" and len(r["value"]) == 3000 and "value_note" not in r
    # Shared structure that would be 2^60 elements: the walk stops at the cap.
    r, took = timed_result(sess, "l <- list(1); for (i in 1:60) l <- list(l, l); l")
    assert r["status"] == "ok" and r["value"] is None and "over 4 MiB" in r["value_note"]
    assert took < util.scaled(5)


@pytest.mark.timeout_s(90)
def test_slow_json_conversion_is_given_up(sess):
    r, took = timed_result(sess, "rep(list(as.Date('2024-03-05')), 1e5)")
    assert r["status"] == "ok", r
    assert r["value"] is None and "took over 2 s" in r["value_note"], r["value_note"]
    assert lines(sess.read("output"))[-1] == "... (output truncated)"
    assert took < util.scaled(10), took


# ---------------------------------------------------------------- C stack


def check_deep_values(s, stack_note):
    """f(1000), f(1e5), and values nested 200 and 5000 deep: errors or notes,
    never a crash; the worker and its variables stay."""
    s.run("kept <- 'still here'; " + RECURSE)
    for code in ("f(1000)", "f(1e5)"):
        r = s.result(code)
        assert r["status"] == "error", (code, r)
        # R's C stack check, or its expressions limit: an R error either way.
        assert ("C stack usage" in r["error"] or "nested too deeply" in r["error"]
                or "infinite recursion" in r["error"]), r["error"]
        assert s.run("kept") == "still here\n"
    # A catchable error, as in plain R.
    assert s.run("tryCatch(f(1e5), error = function(e) 'caught')") == "caught\n"
    r = s.result(NEST.format(d=200) + "; n200")
    assert r["status"] == "ok", r
    assert lines(s.read("output"))[-1] == "... (output truncated)"
    depth, v = 0, r["value"]
    while isinstance(v, list):
        depth, v = depth + 1, v[0]
    assert (depth, v) == (200, 1)
    r = s.result(NEST.format(d=5000) + "; n5000")
    assert r["status"] == "ok", r
    assert r["value"] is None and "nested more than 200 levels" in r["value_note"]
    assert lines(s.read("output"))[-1] == "... (output truncated)"
    # Deep values through jsonlite (a Date at the bottom): R's check stops
    # jsonlite's recursion with an error, which becomes the note.
    r = s.result("d <- Sys.Date(); for (i in 1:190) d <- list(d); d")
    assert r["status"] == "ok", r
    if r["value"] is None:
        assert stack_note in r["value_note"], r["value_note"]
    assert s.run("kept") == "still here\n"


@pytest.mark.timeout_s(90)
def test_deep_recursion_default_stack(sess):
    assert json.loads(sess.read("limits"))["stack"] == 8 * MIB
    check_deep_values(sess, "C stack usage")
    r = sess.result("f(1e5)")
    assert r["limit"] == "stack" and "stack limit: 8192 KiB" in r["error"], r


@pytest.mark.timeout_s(90)
def test_deep_recursion_small_stack(shared):
    s = shared.clone()
    try:
        s.write("limits", json.dumps({"stack": MIB}))
        size = int(s.value("Cstack_info()[['size']]"))
        assert 0.5 * MIB < size < MIB, size
        assert s.run("f <- function(n) if (n > 0) f(n - 1) else 0; f(50)") == "0\n"
        check_deep_values(s, "C stack usage")
        r = s.result("d <- Sys.Date(); for (i in 1:190) d <- list(d); d")
        assert r["value"] is None and "C stack usage" in r["value_note"], r
    finally:
        s.close()


@pytest.mark.timeout_s(60)
def test_tiny_stack_errors_instead_of_crashing(shared):
    s = shared.clone()
    try:
        s.run("kept <- 1")
        s.write("limits", json.dumps({"stack": 64 << 10}))
        r = s.result("1 + 1")
        assert r["status"] == "error" and "C stack usage" in r["error"], r
        assert s.status() == "idle"
    finally:
        s.close()


def test_cstack_info_matches_the_limit(sess):
    info = json.loads(json.dumps(sess.result("as.list(Cstack_info())")["value"]))
    # 8 MiB less the margin, times R's own 0.95; usage measured from the top
    # of the stack mapping.
    assert 6 * MIB < info["size"] < 8 * MIB, info
    assert 0 < info["current"] < 256 << 10, info
    assert info["direction"] == 1
