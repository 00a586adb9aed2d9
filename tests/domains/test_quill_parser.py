"""Parsing, the canonical printer, and the errors a user (or a model) meets, with positions."""

import pytest

from weightsmith.domains.quill import QuillSyntaxError, format_program, parse
from weightsmith.domains.quill.nodes import Call, Filter, Num, Portfolio, Ref, Signal
from weightsmith.errors import UserError

EXAMPLE = """signal mom = rank(delta(close, 5))
filter liquid = ts_mean(volume, 20) > 1e6
portfolio long_short(mom, where=liquid, top=0.2)"""


def test_parses_the_example_program():
    program = parse(EXAMPLE)
    signal, filt, portfolio = program.statements
    assert signal == Signal("mom", Call("rank", (Call("delta", (Ref("close"), Num(5.0))),)))
    assert filt == Filter("liquid", Call("gt", (Call("ts_mean", (Ref("volume"), Num(20.0))), Num(1e6))))
    assert portfolio == Portfolio("long_short", Ref("mom"), Ref("liquid"), 0.2)
    assert program.result_name == "portfolio"
    assert format_program(program) == EXAMPLE


@pytest.mark.parametrize("source, canonical", [
    ("signal a = close - open / 2", "signal a = close - open / 2"),
    ("signal a = (close - open) / 2", "signal a = (close - open) / 2"),
    ("signal a = close - (open - low)", "signal a = close - (open - low)"),
    ("signal a = (close - open) - low", "signal a = close - open - low"),
    ("signal a = -(3)", "signal a = -3"),
    ("signal a = close * -1", "signal a = close * -1"),
    ("filter f = not close > open and returns > 0", "filter f = not close > open and returns > 0"),
    ("filter f = not (close > open and returns > 0)", "filter f = not (close > open and returns > 0)"),
    ("filter f = (close > open) or (returns > 0.02 and volume > 1000000)",
     "filter f = close > open or returns > 0.02 and volume > 1e6"),
    ("signal   a=rank( delta(close,5) )   # a comment", "signal a = rank(delta(close, 5))"),
    ("signal a = rank(\n    delta(close, 5)\n)", "signal a = rank(delta(close, 5))"),
    ("\n# header\nsignal a = .5 * close\n\n", "signal a = 0.5 * close"),
])
def test_canonical_form_round_trips(source, canonical):
    program = parse(source)
    assert format_program(program) == canonical
    assert parse(canonical) == program


def test_precedence():
    expr = parse("signal a = close - open / 2").statements[0].expr
    assert expr.op == "sub" and expr.args[1].op == "div"
    expr = parse("filter f = not close > open and returns > 0").statements[0].expr
    assert expr.op == "and" and expr.args[0].op == "not" and expr.args[0].args[0].op == "gt"


def error(source: str) -> QuillSyntaxError:
    with pytest.raises(QuillSyntaxError) as info:
        parse(source)
    return info.value


@pytest.mark.parametrize("source, line, col, kind, words", [
    ("signal x = rank(close", 1, 22, "syntax", "expected ',' or ')'"),
    ("signal x = delta(close 5)", 1, 24, "syntax", "found '5'"),
    ("signal x = rnk(close)", 1, 12, "name", "did you mean 'rank'"),
    ("signal x = delta(close)", 1, 12, "arity", "takes 2 arguments (x, n) but got 1"),
    ("signal x = rank(close, 5)", 1, 12, "arity", "takes 1 argument"),
    ("signal x = delta(close, 5.5)", 1, 25, "window", "positive integer literal"),
    ("signal x = delta(close, 0)", 1, 25, "window", "positive integer literal"),
    ("signal x = ts_mean(close, n)", 1, 27, "window", "got 'n'"),
    ("signal x = ts_std(returns, 1)", 1, 28, "window", "at least 2"),
    ("signal mom = rank(close)\nportfolio long_short(mon)", 2, 22, "name", "did you mean 'mom'"),
    ("signal b = rank(a)\nsignal a = rank(close)", 1, 17, "name", "undefined name 'a'"),
    ("signal x = rank(close > open)", 1, 17, "type", "must be a numeric series"),
    ("filter f = ts_mean(volume, 20)", 1, 12, "type", "must be a condition"),
    ("signal x = close + sector", 1, 20, "type", "group label"),
    ("signal x = group_demean(close, volume)", 1, 32, "type", "group label: sector"),
    ("signal x = close\nsignal x = open", 2, 8, "name", "already defined on line 1"),
    ("signal rank = close", 1, 8, "name", "reserved"),
    ("mom = rank(close)", 1, 1, "syntax", "write 'signal mom = ...'"),
    ("signal x = close > open ? 1 : 0", 1, 25, "syntax", "if_else"),
    ("filter f = 1 < close < 2", 1, 22, "syntax", "do not chain"),
    ("signal x = add(close, open)", 1, 12, "name", "a + b"),
    ("portfolio long_short(close, top=0.8)", 1, 33, "type", "(0, 0.5]"),
    ("portfolio weighted(close, top=0.2)", 1, 31, "type", "takes no top"),
    ("portfolio long_short(close, bottom=0.2)", 1, 29, "name", "unknown portfolio option"),
    ("portfolio longshort(close)", 1, 11, "name", "did you mean 'long_short'"),
    ("portfolio long_only(close)\nsignal s = close", 1, 1, "type", "last statement"),
    ("signal x = winsorize(close, volume)", 1, 29, "type", "number literal"),
    ("", 1, 1, "syntax", "empty program"),
    ("signal a = closeα", 1, 17, "syntax", "unexpected character 'α'"),
    ("signal a = rank(close, ²)", 1, 24, "syntax", "unexpected character '²'"),
    ("signal ä = close", 1, 8, "syntax", "unexpected character 'ä'"),
])
def test_errors_name_line_and_column(source, line, col, kind, words):
    err = error(source)
    assert (err.line, err.col, err.kind) == (line, col, kind), str(err)
    assert words in err.message
    assert str(err).startswith(f"{line}:{col}: ")
    assert isinstance(err, UserError)


def test_error_shows_a_caret_under_the_column():
    lines = str(error("signal a = rank(close)\nsignal b = rank(clse)")).splitlines()
    assert lines[0].startswith("2:17: undefined name 'clse' (did you mean 'close'?)")
    assert lines[1] == "  signal b = rank(clse)"
    assert lines[2].index("^") == lines[1].index("clse")


def test_deep_nesting_is_an_error_not_a_crash():
    err = error("signal x = " + "(" * 300 + "close" + ")" * 300)
    assert "nested" in err.message


def test_non_text_is_a_user_error():
    with pytest.raises(UserError):
        parse(None)
