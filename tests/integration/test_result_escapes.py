"""result.json and value.json carry no raw DEL or C1 control (round 3,
finding 8; docs/security.md, "Round 3: the host side of the boundary"):
README tells users to cat result.json, and a terminal obeys U+009B (CSI) as
it does ESC [.  They are written as the JSON escapes \\u007f and \\u0080 to
\\u009f, so both files still read back as the exact values."""
import json

import pytest

import util

SHARED_OPTS = ("pool=1",)

# DEL, CSI, OSC, ST, and the C1 range's ends, in R's notation.
NASTY_R = 'paste0("a", "\\x7f", "\\u009b2J", "\\u009d0;T\\u009c", "\\u0080\\u009f", "\\033[1m", "\\u00e9")'
NASTY = "a\x7f\u009b2J\u009d0;T\u009c\u0080\u009f\x1b[1m\u00e9"


def raw_controls(raw):
    return [i for i in range(len(raw)) if raw[i] == 0x7F or raw[i] < 0x20 and raw[i] != 0x0A
            or (raw[i] == 0xC2 and i + 1 < len(raw) and 0x80 <= raw[i + 1] <= 0x9F)]


@pytest.mark.timeout_s(60)
def test_value_console_and_warning_are_escaped_and_exact(sess):
    r = sess.result('x <- %s; cat(x); warning(x); x' % NASTY_R)
    assert r["status"] == "ok", r
    for name in ("result.json", "value.json"):
        raw = util.read_bytes(sess.p(name))
        assert not raw_controls(raw), (name, raw[:300])
        assert b"\\u009b" in raw and b"\\u007f" in raw, (name, raw[:300])
    # The same JSON values: the exact text.
    assert r["value"] == NASTY
    assert r["output"] == NASTY
    assert r["console"].startswith(NASTY), r["console"]
    assert any(NASTY in w for w in r["warnings"]), r["warnings"]
    assert json.loads(util.read_bytes(sess.p("value.json"))) == NASTY
    # The files people read are escaped as before.
    out = util.read_bytes(sess.p("output"))
    assert not raw_controls(out.rstrip(b"\n")), out
    # Outside: the session goes on.
    assert sess.value("1+1") == "2"


@pytest.mark.timeout_s(60)
def test_error_text_is_escaped_and_exact(sess):
    r = sess.result('stop(%s)' % NASTY_R)
    assert r["status"] == "error", r
    raw = util.read_bytes(sess.p("result.json"))
    assert not raw_controls(raw), raw[:300]
    assert NASTY in r["error"], r["error"]
    assert sess.value("2+2") == "4"
