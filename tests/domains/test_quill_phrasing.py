"""The phrase book and the held-out-phrasing split: requests worded the way a quant types them.

What a user relies on: the held-out-phrasing eval uses wordings (families) that no training
request uses — by family id and by what the text shows; the same seed words the same requests;
every phrasing in the table renders, says everything the program needs, and its program runs.
"""

from __future__ import annotations

import random
import re
from dataclasses import replace

import pytest
import yaml

from weightsmith.domains.quill import build_manual, make_splits, parse
from weightsmith.domains.quill.describe import TILES, render_request
from weightsmith.domains.quill.nodes import Call, Num, Portfolio, Program
from weightsmith.domains.quill.ops import OPS
from weightsmith.domains.quill.parser import parse_expression
from weightsmith.domains.quill.phrasebook import SHIPPED, PhraseBook, load_phrasebook
from weightsmith.domains.quill.tasks import Task, phrasing_split_violations
from weightsmith.domains.quill.verify import CORRECT, verdict
from weightsmith.errors import UserError

BOOK = load_phrasebook()


@pytest.fixture(scope="module")
def splits():
    return make_splits(seed=11, n_train=400, n_test=80)


# ---- held out by family id, and by what the text shows --------------------------------------------


def test_heldout_families_are_disjoint_from_training_ones(splits):
    assert BOOK.train_ids and BOOK.heldout_ids and not BOOK.train_ids & BOOK.heldout_ids
    for split in ("train", "indist", "heldout"):
        for task in splits[split]:
            assert task.families and set(task.families) <= BOOK.train_ids, (split, task)
    used = set()
    for task in splits["phrasing"]:
        (heldout,) = set(task.families) & BOOK.heldout_ids  # exactly one held-out family a request
        assert set(task.families) - {heldout} <= BOOK.train_ids
        used.add(heldout)
    assert used == BOOK.heldout_ids  # every held-out family gets its share of the split
    assert phrasing_split_violations(splits) == []


def test_no_training_request_shows_a_heldout_marker(splits):
    # Many training renderings (each train program worded five more times), the other splits,
    # and the manual the model pre-trains on: none may show what makes a held-out family.
    rng = random.Random(0)
    texts = [t.request for split in ("train", "indist", "heldout") for t in splits[split]]
    texts += [render_request(parse(t.program), rng).text for t in splits["train"] for _ in range(5)]
    leaks = [(text, BOOK.leaks(text)) for text in texts if BOOK.leaks(text)]
    assert leaks == []
    manual_lines = [line for doc in build_manual(seed=0) for line in doc.text.splitlines()]
    assert [line for line in manual_lines if BOOK.leaks(line)] == []
    # ... while every held-out request shows its own family's marker: the check can see them.
    for task in splits["phrasing"]:
        (heldout,) = set(task.families) & BOOK.heldout_ids
        assert heldout in {family for family, _ in BOOK.leaks(task.request)}, task


def test_violations_are_reported():
    leaked = Task("t-1", "mom := 5d ret", "signal mom = pct_change(close, 5)", "train", 1, 1, ("terse", "desk"))
    forged = Task("t-2", "mom = 5d ret", "signal mom = pct_change(close, 5)", "indist", 1, 1, ("walrus", "desk"))
    plain = Task("t-3", "mom = 5d ret", "signal mom = pct_change(close, 5)", "phrasing", 1, 1, ("terse", "desk"))
    problems = phrasing_split_violations({"train": [leaked], "indist": [forged], "phrasing": [plain]},
                                         other_training_text={"manual page x": "intro\nz := 1"})
    assert len(problems) == 4
    assert "t-1" in problems[0] and "walrus" in problems[0]
    assert "t-2" in problems[1] and "heldout family walrus" in problems[1]
    assert "t-3" in problems[2] and "0 heldout families" in problems[2]
    assert problems[3].startswith("manual page x, line 2")


# ---- deterministic ----------------------------------------------------------------------------


def test_renderer_is_deterministic_by_seed(splits):
    programs = [parse(t.program) for t in splits["train"][:50]]
    for force in (None, "walrus", "postfix", "typos-b"):
        first = [render_request(p, random.Random(7), force=force) for p in programs]
        again = [render_request(p, random.Random(7), force=force) for p in programs]
        other = [render_request(p, random.Random(8), force=force) for p in programs]
        assert first == again and first != other
    small = make_splits(seed=11, n_train=60, n_test=20)
    assert make_splits(seed=11, n_train=60, n_test=20) == small
    assert [t.request for t in make_splits(seed=12, n_train=60, n_test=20)["phrasing"]] != \
        [t.request for t in small["phrasing"]]


def test_the_same_seed_words_the_same_splits_in_any_process():
    # Python salts str hashes per process: a draw that walks a set in its own order words another
    # split in CI than here (it did: a typo then fell on a held-out marker in one process only).
    import os
    import subprocess
    import sys

    code = ("import hashlib; from weightsmith.domains.quill import make_splits; "
            "s = make_splits(seed=11, n_train=200, n_test=60); "
            "print(hashlib.sha256(repr([(t.request, t.families) for k in sorted(s) for t in s[k]]).encode()).hexdigest())")
    digests = {subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONHASHSEED": str(h)},
                              capture_output=True, text=True, check=True).stdout for h in (1, 2, 3)}
    assert len(digests) == 1, digests


# ---- every phrasing renders, says what the program needs, and its program runs ----------------------

# Words of the register that carry a number without writing it.
NUMBER_WORDS = {"prev": 1.0, "yday": 1.0, "up day": 0.0, "down day": 0.0, "signed sqrt": 0.5, "signed square": 2.0,
                **{word: value for value, word in TILES.items()}}
_NUMBER = re.compile(r"(?<![\d.])(-?\d+(?:\.\d+)?(?:e-?\d+)?)(\s?bps|%|k\b|m\b)?", re.IGNORECASE)
_SCALE = {None: 1, "bps": 1e-4, "%": 1e-2, "k": 1e3, "m": 1e6}


def spoken_numbers(text: str) -> set[float]:
    """Every number a reader takes from ``text``: 2m is 2e6, 50bps 0.005, 20% 0.2 (and 20), decile 0.1."""
    out = set()
    for digits, unit in _NUMBER.findall(text):
        value = float(digits)
        out.add(round(value, 12))
        out.add(round(value * _SCALE[unit.strip().lower() or None], 12))
    out |= {v for word, v in NUMBER_WORDS.items() if re.search(rf"\b{word}s?\b", text, re.IGNORECASE)}
    return out


def needed_numbers(program: Program) -> set[float]:
    """What the request must say for the program to be written: windows, thresholds, tops, clip widths."""
    out = set()
    for stmt in program.statements:
        if isinstance(stmt, Portfolio):
            out |= {round(stmt.top, 12)} if stmt.top is not None else set()
        nodes = [n for e in ([stmt.signal, stmt.where] if isinstance(stmt, Portfolio) else [stmt.expr])
                 if e is not None for n in _walk(e)]
        for node in nodes:
            if not isinstance(node, Call):
                continue
            for arg, spec in zip(node.args, OPS[node.op].args):
                if isinstance(arg, Num) and (spec.kind == "window" or node.op in ("gt", "ge", "lt", "le", "eq", "ne")
                                             or node.op == "winsorize"):
                    out.add(round(arg.value, 12))
    return out


def _walk(expr):
    yield expr
    if isinstance(expr, Call):
        for arg in expr.args:
            yield from _walk(arg)


def assert_solvable(program_source: str, text: str) -> None:
    program = parse(program_source)
    assert verdict(program_source, program_source) == CORRECT  # the reference executes
    missing = needed_numbers(program) - spoken_numbers(text)
    assert not missing, f"{text!r} does not say {sorted(missing)} for {program_source!r}"
    if len(program.statements) > 1:
        for stmt in program.statements:
            if not isinstance(stmt, Portfolio):
                assert re.search(rf"\b{stmt.name}\b", text), (stmt.name, text)


def test_every_task_says_what_its_program_needs(splits):
    for split, tasks in splits.items():
        for task in tasks:
            assert_solvable(task.program, task.request)


def _quiet(book: PhraseBook, **families) -> PhraseBook:
    """``book`` without noise or number families, with some families replaced: one phrasing at a time."""
    kept = {fid: f for fid, f in book.families.items() if f.kind not in ("noise", "numbers")}
    return PhraseBook({**kept, **families}, {"numbers": 1.0, "noise": 1.0}, book.source, book.sha256)


def _pattern(template: str, values: dict[str, str]) -> re.Pattern:
    """A regex for a template's rendering: literal text as is, known values exactly, anything else lazily."""
    parts = re.split(r"(\{\w+\})", template)
    return re.compile("".join(re.escape(values.get(p[1:-1], "")) if p.startswith("{") and p[1:-1] in values
                              else ".*?" if p.startswith("{") else re.escape(p) for p in parts), re.IGNORECASE)


ARGS = {"series": ("open", "volume"), "mask": ("close > open",), "group": ("sector",)}


def operator_program(op_name: str) -> tuple[str, dict[str, str]]:
    """A one-statement program applying ``op_name`` to fields, and the values its phrasing will show."""
    op = OPS[op_name]
    args, values, series = [], {}, iter(ARGS["series"])
    for spec in op.args:
        if spec.kind == "window":
            value = "10" if spec.choices and 10 in spec.choices else str(spec.choices[-1])
            args.append(value)
            values[spec.name] = value
        elif spec.kind == "scalar":
            args.append(str(spec.choices[-1]))
        elif spec.kind in ("mask", "group"):
            args.append(ARGS[spec.kind][0])
        else:
            args.append(next(series) if op.category != "logic" else "close > open")
    if op.category == "logic":
        args = ["close > open", "volume > 1e6"][: op.arity]
    if op.symbol and op.arity == 2:
        source = f"{args[0]} {op.symbol} {args[1]}" if op.category != "logic" else f"{args[0]} {op_name} {args[1]}"
    elif op.symbol:
        source = f"{op.symbol}{' ' if op.symbol.isalpha() else ''}{args[0]}"
    else:
        source = f"{op_name}({', '.join(args)})"
    _, kind = parse_expression(source)
    return f"{'filter f' if kind == 'mask' else 'signal s'} = {source}", values


def idiom_program(match: str) -> str:
    source = re.sub(r"\b([xyabnkp])\b", lambda m: {"n": "10", "k": "2", "p": "2"}.get(m.group(1), "open"), match)
    _, kind = parse_expression(source)
    return f"{'filter f' if kind == 'mask' else 'signal s'} = {source}"


WORD_CASES = [(f.id, op, i) for f in BOOK.families.values() if f.kind == "words"
              for op, phrases in f.operators.items() for i in range(len(phrases))]
IDIOM_CASES = [(f.id, i, j) for f in BOOK.families.values() for i, idiom in enumerate(f.idioms)
               for j in range(len(idiom.say))]


@pytest.mark.parametrize("family_id, op, index", WORD_CASES, ids=[f"{f}.{o}[{i}]" for f, o, i in WORD_CASES])
def test_each_operator_phrasing_renders_and_round_trips(family_id, op, index):
    family = BOOK.families[family_id]
    phrase = family.operators[op][index]
    alone = replace(family, operators={**family.operators, op: (phrase,)}, idioms=())
    book = _quiet(BOOK, **{family_id: alone})
    source, values = operator_program(op)
    pattern = _pattern(phrase.text, values)
    rng = random.Random(0)
    renderings = [render_request(parse(source), rng, book, force=family_id) for _ in range(30)]
    hits = [r for r in renderings if family_id in r.families and pattern.search(r.text)]
    assert hits, (phrase.text, source, [r.text for r in renderings[:3]])
    assert_solvable(source, hits[0].text)


@pytest.mark.parametrize("family_id, index, say", IDIOM_CASES, ids=[f"{f}.idioms[{i}][{j}]" for f, i, j in IDIOM_CASES])
def test_each_idiom_renders_and_round_trips(family_id, index, say):
    family = BOOK.families[family_id]
    idiom = family.idioms[index]
    alone = replace(family, idioms=(replace(idiom, say=(idiom.say[say],)),), idiom_rate=1.0)
    book = _quiet(BOOK, **{family_id: alone})
    source = idiom_program(idiom.source)
    pattern = _pattern(idiom.say[say].text, {"n": "10"})
    rng = random.Random(0)
    renderings = [render_request(parse(source), rng, book, force=family_id) for _ in range(20)]
    hits = [r for r in renderings if family_id in r.families and pattern.search(r.text)]
    assert hits, (idiom.say[say].text, source, [r.text for r in renderings[:3]])
    assert_solvable(source, hits[0].text)


FRAME_PROGRAMS = {
    "signal": "signal mom = pct_change(close, 5)",
    "filter": "filter liquid = ts_mean(volume, 20) > 2e6",
    "long_short": "signal mom = pct_change(close, 5)\nfilter liquid = volume > 1e6\n"
                  "portfolio long_short(mom, where=liquid, top=0.1)",
    "long_only": "signal mom = pct_change(close, 5)\nportfolio long_only(mom, top=0.3)",
    "weighted": "signal mom = pct_change(close, 5)\nfilter liquid = volume > 1e6\nportfolio weighted(mom, where=liquid)",
}
FRAME_CASES = []
for _f in BOOK.families.values():
    if _f.kind != "frames":
        continue
    FRAME_CASES += [(_f.id, key, None, i) for key in ("signal", "filter", "join", "where") for i in range(len(getattr(_f, key)))]
    FRAME_CASES += [(_f.id, key, kind, i) for key in ("portfolio", "top", "top_inline")
                    for kind, templates in getattr(_f, key).items() for i in range(len(templates))]


@pytest.mark.parametrize("family_id, key, kind, index", FRAME_CASES,
                         ids=[f"{f}.{k}{'.' + p if p else ''}[{i}]" for f, k, p, i in FRAME_CASES])
def test_each_frame_renders_and_round_trips(family_id, key, kind, index):
    family = BOOK.families[family_id]
    templates = getattr(family, key)[kind] if kind else getattr(family, key)
    template = templates[index]
    alone = replace(family, **{key: {**getattr(family, key), kind: (template,)} if kind else (template,)})
    book = _quiet(BOOK, **{family_id: alone})
    if key in ("signal", "filter"):
        source, values = FRAME_PROGRAMS[key], {"name": FRAME_PROGRAMS[key].split()[1]}
    elif key in ("join", "where"):
        source, values = FRAME_PROGRAMS["long_short"], {"x": "liquid"}
    else:
        source = FRAME_PROGRAMS[kind]
        top = parse(source).statements[-1].top
        if "{tile}" in template and TILES.get(top) is None:
            source = source.replace("top=0.3", "top=0.2")
            top = 0.2
        values = {"signal": "mom", "pct": f"{round(top * 100):g}" if top else "", "frac": f"{top:g}" if top else "",
                  "tile": TILES.get(top, "") if top else ""}
    pattern = _pattern(template, values)
    rng = random.Random(0)
    renderings = [render_request(parse(source), rng, book, force=family_id) for _ in range(40)]
    hits = [r for r in renderings if family_id in r.families and pattern.search(r.text)]
    assert hits, (template, source, [r.text for r in renderings[:3]])
    assert_solvable(source, hits[0].text)


def test_number_families_write_thresholds_exactly_in_their_units():
    numbers = BOOK.families["desk-numbers"]
    book = PhraseBook({**_quiet(BOOK).families, "desk-numbers": numbers}, {"noise": 1.0}, BOOK.source, BOOK.sha256)
    cases = {"filter f = ts_mean(volume, 20) > 1.3e6": r"1\.3m\b", "filter f = volume < 190000": r"190k\b",
             "filter f = returns > 0.0015": r"15 ?bps|0\.15%", "filter f = ts_std(returns, 20) <= 0.02": r"200 ?bps|2%",
             "filter f = returns < -0.011": r"-110 ?bps|-1\.1%"}
    for source, expected in cases.items():
        texts = [render_request(parse(source), random.Random(i), book, force="desk-numbers").text for i in range(12)]
        assert any(re.search(expected, t) for t in texts), (source, texts)
        for text in texts:
            assert_solvable(source, text)


def test_typos_and_casing_never_touch_names_or_numbers():
    source = "signal value = ts_mean(volume, 20) / ts_std(returns, 10)\nportfolio long_short(value, top=0.25)"
    for family_id in ("typos", "typos-b", "slips", "lowercase"):
        for seed in range(20):
            text = render_request(parse(source), random.Random(seed), force=family_id).text
            assert re.search(r"\bvalue\b", text)
            assert_solvable(source, text)


def test_slips_change_one_letter_of_a_word_and_never_show_a_heldout_typo():
    # "high" slips to "hihg" (a swap) and "close" to "clsoe": both are typos-b's held-out misspellings,
    # so a training request may slip anywhere but there.
    source = "signal value = ts_mean(close, 20) - high\nportfolio long_short(value, top=0.2)"
    seen, slipped = set(), 0
    for seed in range(300):
        rendering = render_request(parse(source), random.Random(seed), force="slips")
        assert rendering == render_request(parse(source), random.Random(seed), force="slips")
        # Recorded only when a slip was made: `value: 20d ma - hi` has no word to slip but the name.
        slipped += "slips" in rendering.families
        assert re.search(r"\bvalue\b", rendering.text) and BOOK.leaks(rendering.text) == []
        assert_solvable(source, rendering.text)
        seen.add(rendering.text)
    assert slipped > 150 and len(seen) > 50  # the slips land on different letters of different words


def test_each_program_worded_several_times_leaves_the_eval_splits_as_they_were():
    once = make_splits(seed=5, n_train=120, n_test=30)
    thrice = make_splits(seed=5, n_train=120, n_test=30, renderings=3)
    assert all(once[split] == thrice[split] for split in ("indist", "heldout", "phrasing"))
    programs = [t.program for t in thrice["train"]]
    assert set(programs) == {t.program for t in once["train"]} and 120 < len(programs) <= 360
    by_program: dict[str, list[str]] = {}
    for task in thrice["train"]:
        by_program.setdefault(task.program, []).append(task.request)
    assert all(len(set(requests)) == len(requests) for requests in by_program.values())  # no wording twice
    assert phrasing_split_violations(thrice) == []
    with pytest.raises(ValueError, match="renderings must be at least 1"):
        make_splits(seed=5, n_train=10, n_test=5, renderings=0)


def test_an_operation_on_the_left_of_arithmetic_is_bracketed():
    # "sign of hi - open" would read as sign(high - open); "(sign of hi) - open" cannot.
    from weightsmith.domains.quill.describe import describe_expr
    from weightsmith.domains.quill.parser import parse_expression

    expr, _ = parse_expression("sign(high) - open")
    texts = {describe_expr(expr, random.Random(seed)) for seed in range(60)}
    texts |= {render_request(parse("signal s = sign(high) - open"), random.Random(seed), force="desk").text
              for seed in range(60)}
    assert any(t.startswith("(") for t in texts)
    for text in texts:
        assert re.search(r"\((the )?(sign|sgn)\b|the difference between", text, re.IGNORECASE), text


# ---- the register, written by hand: the phrase book says each of these --------------------------

REGISTER = [  # (request, program, frames family, words family, numbers family)
    ("xs z of 20d vol", "signal s = zscore(ts_std(returns, 20))", "terse", "desk", None),
    ("mom5 := 5d ret on close", "signal mom5 = pct_change(close, 5)", "walrus", "desk", None),
    ("sector-neutral rev, 3d", "signal s = group_demean(-pct_change(close, 3), sector)", "terse", "postfix", None),
    ("vol-scaled 10d momentum, call it vsm", "signal vsm = pct_change(close, 10) / ts_std(returns, 10)", "call-it",
     "desk", None),
    ("liquid = adv20 above 2m", "filter liquid = ts_mean(volume, 20) > 2e6", "terse", "desk", "desk-numbers"),
    ("mom5 = 5d ret; L/S top decile on mom5",
     "signal mom5 = pct_change(close, 5)\nportfolio long_short(mom5, top=0.1)", "terse", "desk", None),
    ("10d ts rank of vlm", "signal s = ts_rank(volume, 10)", "terse", "desk", None),
    ("ts_rank of close over 10 days", "signal s = ts_rank(close, 10)", "terse", "opnames", None),
    ("rank of 5d chg in close", "signal s = rank(delta(close, 5))", "terse", "desk", None),
    ("close / 10d ma", "signal s = close / ts_mean(close, 10)", "terse", "desk", None),
    ("days since 20d high", "signal s = ts_argmax(high, 20)", "terse", "desk", None),
    ("20d corr of ret and vlm", "signal s = ts_corr(returns, volume, 20)", "terse", "desk", None),
    ("ret > 50bps", "filter f = returns > 0.005", "terse", "desk", "desk-numbers"),
    ("20d vol at most 2%", "filter f = ts_std(returns, 20) <= 0.02", "terse", "desk", "desk-numbers"),
    ("vlm above adv20", "filter f = volume > ts_mean(volume, 20)", "terse", "desk", None),
    ("sector rank of 5d mom", "signal s = group_rank(pct_change(close, 5), sector)", "terse", "desk", None),
    ("prev close", "signal s = delay(close, 1)", "terse", "desk", None),
    ("ret floored at 0", "signal s = max(returns, 0)", "terse", "desk", None),
    ("signed sqrt of xs z of ret", "signal s = signed_power(zscore(returns), 0.5)", "terse", "desk", None),
    ("10d wma of ret", "signal s = decay_linear(returns, 10)", "terse", "desk", None),
    ("ret clipped at 2sd", "signal s = winsorize(returns, 2)", "terse", "desk", None),
    ("log adv20", "signal s = log(ts_mean(volume, 20))", "terse", "desk", None),
    ("calm = lo above lo 5d avg", "filter calm = low > ts_mean(low, 5)", "terse", "postfix", None),
    ("ma10 of vlm -> smooth", "signal smooth = ts_mean(volume, 10)", "call-it", "fused", None),
    ("trend := vol20 below 2%", "filter trend = ts_std(returns, 20) < 0.02", "walrus", "fused", "desk-numbers"),
    ("mom = 20d mom\nlong-only top quintile by mom",
     "signal mom = pct_change(close, 20)\nportfolio long_only(mom, top=0.2)", "newline", "desk", None),
    ("mom = 5d mom; L/S mom by deciles", "signal mom = pct_change(close, 5)\nportfolio long_short(mom, top=0.1)",
     "deciles", "desk", None),
    ("can you give me xs z of 20d vol?", "signal s = zscore(ts_std(returns, 20))", "ask", "desk", None),
    ("pls add signal rev = 3d rev", "signal rev = -pct_change(close, 3)", "ask", "desk", None),
    ("Define a signal mom as 5d ret.", "signal mom = pct_change(close, 5)", "sentences", "desk", None),
    ("edge: sector-neutral 5d rev", "signal edge = group_demean(-pct_change(close, 5), sector)", "terse", "desk", None),
]


@pytest.mark.parametrize("request_text, source, frames, words, numbers", REGISTER, ids=[r[0] for r in REGISTER])
def test_the_phrase_book_speaks_the_desk_register(request_text, source, frames, words, numbers):
    def only(family):
        return {family.id: replace(family, weight=1.0)} if family.role == "heldout" else {family.id: family}

    chosen = [BOOK.families[frames], BOOK.families[words]] + ([BOOK.families[numbers]] if numbers else [])
    families = {}
    for family in chosen:  # the chosen families and what they fall back to, nothing else
        for member in BOOK.chain(family):
            families.update(only(member) if member is family else {member.id: replace(member, weight=0.0)})
    train = {fid: replace(f, role="train") for fid, f in families.items()}
    book = PhraseBook(train, {"numbers": 0.0, "noise": 1.0}, BOOK.source, BOOK.sha256)
    program = parse(source)
    texts = {render_request(program, random.Random(seed), book).text for seed in range(3000)}
    assert request_text in texts, sorted(texts)[:20]
    assert_solvable(source, request_text)


# ---- the table is data a user extends, and a bad one is refused with where and why ------------------


def _shipped_yaml() -> dict:
    return yaml.safe_load(SHIPPED.read_text(encoding="utf-8"))


def _family(raw: dict, fid: str) -> dict:
    return next(f for f in raw["families"] if f["id"] == fid)


def test_a_user_extends_the_phrase_book(tmp_path):
    from weightsmith.domains.quill import build_datasets
    import json

    raw = _shipped_yaml()
    raw["families"].append({"id": "quant-slang", "kind": "words", "role": "train", "weight": 50,
                            "falls_back_to": "desk", "operators": {"ts_std": ["{n}d sigma of {x}"]}})
    path = tmp_path / "phrases.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    book = load_phrasebook(path)
    text = render_request(parse("signal s = ts_std(open, 10)"), random.Random(0), book, force="quant-slang").text
    assert "10d sigma of open" in text
    paths = build_datasets(tmp_path / "data", seed=0, n_train=40, n_test=10, n_manual_examples=4, phrasebook=path)
    provenance = json.loads(paths["provenance"].read_text())
    assert provenance["phrasebook"]["families"]["quant-slang"] == {"kind": "words", "role": "train"}
    assert provenance["phrasebook"]["source"] == str(path.resolve())


BAD_BOOKS = [
    (lambda raw: _family(raw, "desk")["operators"].update({"ts_meen": ["{n}d avg of {x}"]}),
     r"families\[\d+\] \('desk'\)\.operators\.ts_meen: is not a Quill operator \(did you mean 'ts_mean'\?\)"),
    (lambda raw: _family(raw, "desk")["operators"].update({"ts_mean": ["{n}d avg"]}),
     r"operators\.ts_mean\[0\]: '\{n\}d avg' leaves out \{x\}, so the request would not say it"),
    (lambda raw: _family(raw, "desk")["operators"].update({"ts_mean": ["{m}d avg of {x}"]}),
     r"operators\.ts_mean\[0\]: '\{m\}d avg of \{x\}' uses \{m\}, which is not a placeholder here"),
    (lambda raw: _family(raw, "terse")["signal"].append("{name} := {desc}"),
     r"family 'terse'\.signal\[7\]: the training phrasing '\{name\} := \{desc\}' shows the marker .* of held-out "
     r"family 'walrus'"),
    (lambda raw: _family(raw, "walrus")["signal"].append("{name} = {desc}"),
     r"family 'walrus'\.signal\[1\]: '\{name\} = \{desc\}' shows none of the family's markers"),
    (lambda raw: _family(raw, "opnames").update({"falls_back_to": "postfix"}),
     r"family 'opnames'\.falls_back_to: 'postfix' must be a train family of kind words"),
    (lambda raw: _family(raw, "opnames").update({"falls_back_to": None}),
     r"family 'opnames': nothing \(in it or what it falls back to\) words operators\.if_else"),
    (lambda raw: _family(raw, "desk").update({"idioms": [{"match": "ts_std(returns, n", "say": ["{n}d vol"]}]}),
     r"idioms\[0\]\.match: 'ts_std\(returns, n' is not a Quill expression"),
    (lambda raw: _family(raw, "ask").pop("markers"),
     r"families\[\d+\] \('ask'\)\.markers: a heldout family needs markers"),
    (lambda raw: _family(raw, "slips").update({"edits": 0}),
     r"\('slips'\)\.edits: must be a whole number of at least 1"),
    (lambda raw: _family(raw, "desk").update({"wieght": 3}),
     r"\('desk'\)\.wieght: is not a key of a words family \(did you mean 'weight'\?\)"),
]


@pytest.mark.parametrize("mutate, message", BAD_BOOKS, ids=[m for _, m in BAD_BOOKS])
def test_a_bad_phrase_book_is_refused_with_where_and_why(tmp_path, mutate, message):
    raw = _shipped_yaml()
    mutate(raw)
    path = tmp_path / "phrases.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    with pytest.raises(UserError, match=message) as caught:
        load_phrasebook(path)
    assert str(caught.value).startswith(str(path.resolve())) and "\n" not in str(caught.value)


def test_a_heldout_marker_that_training_text_shows_is_refused_before_anything_is_written(tmp_path):
    # Each phrasing passes on its own; the manual the model pre-trains on shows the marker.
    from weightsmith.domains.quill import build_datasets

    raw = _shipped_yaml()
    raw["families"].append({"id": "panelese", "kind": "frames", "role": "heldout", "falls_back_to": "terse",
                            "markers": ["\\bsample panel\\b"], "signal": ["{desc} on the sample panel, as {name}"]})
    path = tmp_path / "phrases.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    with pytest.raises(UserError, match=r"phrases\.yaml: the held-out phrasing shows in training text: manual page "
                                        r".*, line \d+ shows heldout family panelese's marker"):
        build_datasets(tmp_path / "data", seed=0, n_train=20, n_test=4, n_manual_examples=4, phrasebook=path)
    assert not (tmp_path / "data").exists()

