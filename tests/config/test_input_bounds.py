"""Bounded, validated input everywhere (issue 11, section 3).

A YAML "billion laughs" is refused while loading, in bounded time and memory; no message
carries an unbounded user value; every name, from every entry point, follows the one name rule
`data add` enforces; and `key=value` overrides are read wherever they stand on the line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from helpers import EXAMPLES, query_db

DOCS = EXAMPLES / "tiny" / "data" / "docs"
NAME_RULE = "use 1 to 100 ASCII letters, digits, '_', '-' or '.', starting with a letter or digit (no '@', '/' or spaces)"


def _pipeline(tmp_path, *, datasets="  docs: {path: %s, format: text}\n" % DOCS, stages=None, head="name: p\n"):
    stages = stages or (
        "  tokenizer: {data: docs, vocab_size: 320, min_frequency: 1}\n"
        "  pretrain: {data: docs, tokenizer: tokenizer, size: tiny, seq_len: 32, batch_size: 4, max_steps: 1}\n"
    )
    path = tmp_path / "p.yaml"
    path.write_text(head + "datasets:\n" + datasets + "defaults: {device: cpu}\nstages:\n" + stages)
    return path


def _laughs(levels: int, indent: str = "  ") -> str:
    """A "billion laughs": level i is ten aliases of level i-1, so it expands to 10**levels 'lol's."""
    lines = [f'{indent}l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels + 1):
        lines.append(f"{indent}l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]")
    return "\n".join(lines) + "\n"


def _inline_laughs(levels: int) -> str:
    value = "&a0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"
    for i in range(1, levels + 1):
        value = f"[{value}, &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]]"
    return value


def _at_most_2_gb() -> None:
    # The CLI's `run` maps ~400 MB; a regression that expands the bomb fails fast instead of
    # taking the memory of a machine the test shares.
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))


def _measured(cwd, *args: str, timeout: float = 120):
    """Run the CLI; return (exit code, stdout, stderr, seconds, peak memory in MB) of that one process."""
    out, err = cwd / "out.txt", cwd / "err.txt"
    started = time.monotonic()
    with open(out, "w") as fo, open(err, "w") as fe:
        proc = subprocess.Popen([sys.executable, "-m", "weightsmith", *args], cwd=cwd, stdout=fo, stderr=fe,
                                env={**os.environ, "OMP_NUM_THREADS": "1"}, preexec_fn=_at_most_2_gb)
        deadline = time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
                raise AssertionError(f"weightsmith {args[:2]} ran past {timeout} s")
            time.sleep(0.05)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, out.read_text(), err.read_text(), time.monotonic() - started, usage.ru_maxrss / 1024


def _nothing_created(ws_dir) -> None:
    db = ws_dir / ".weightsmith" / "weightsmith.db"
    for table in ("datasets", "dataset_versions", "pipelines", "jobs", "models"):
        assert query_db(db, f"SELECT count(*) FROM {table}") == [(0,)], table


# -- a billion laughs ---------------------------------------------------------------------------
# The CLI process imports torch and the service layer (~420 MB resident before it reads the YAML); the
# bomb used to take it past 3 GB. The bound says "nothing was expanded", with room for imports to grow.
MAX_PEAK_MB = 1000

def test_a_billion_laughs_in_defaults_is_refused_while_loading(cli, ws_dir, tmp_path):
    # Nine levels: 10**9 values once walked (3.1 GB and a MemoryError after 36 s, before).
    text = _pipeline(tmp_path).read_text().replace("defaults: {device: cpu}\n", "defaults:\n  device: cpu\n" + _laughs(9)
                                                   + "  lr: *l9\n")
    (tmp_path / "p.yaml").write_text(text)
    code, out, err, seconds, peak_mb = _measured(ws_dir, "run", str(tmp_path / "p.yaml"), "--detach")
    assert code == 2, err
    # l5 is the first to pass the bound: 10**5 'lol's, 4.1 million values and characters.
    line = next(n for n, row in enumerate(text.splitlines(), 1) if row.startswith("  l5:"))
    assert err.strip() == (f"error: {tmp_path / 'p.yaml'}:{line}:7: its aliases (*name) expand this value to more than "
                           "1,000,000 values and characters beyond what the file spells out; write the repeated part "
                           "out, or repeat it fewer times.")
    assert seconds < 30 and peak_mb < MAX_PEAK_MB, (seconds, peak_mb)
    _nothing_created(ws_dir)


def test_a_billion_laughs_in_an_override_is_refused_and_the_message_stays_short(cli, ws_dir, tmp_path):
    pipeline = _pipeline(tmp_path)
    bomb = _inline_laughs(7)
    code, out, err, seconds, peak_mb = _measured(ws_dir, "run", str(pipeline), f"pretrain.lr={bomb}", "--detach")
    assert code == 2, err
    item = f"pretrain.lr={bomb}"
    assert err.startswith(f"error: override {item[:80]!r}… ({len(item)} characters): its aliases (*name) expand this "
                          "value to more than 1,000,000 values"), err
    assert len(err) < 400 and seconds < 30 and peak_mb < MAX_PEAK_MB, (len(err), seconds, peak_mb)
    _nothing_created(ws_dir)


@pytest.mark.parametrize("value, says", [
    ("&a [1, *a]", "an alias refers to the value that contains it"),
    ("[" * 150 + "]" * 150, "values are nested more than 100 levels deep"),
])
def test_an_infinite_or_too_deep_override_is_one_sentence(cli, tmp_path, value, says):
    proc = cli("run", str(_pipeline(tmp_path)), f"pretrain.lr={value}", "--detach", check=False)
    assert proc.returncode == 2 and says in proc.stderr and len(proc.stderr) < 400, proc.stderr
    assert "Traceback" not in proc.stderr


def test_values_in_messages_are_cut_short(cli, tmp_path):
    """A 100,000-character value is named by its first 80 characters and its length, not echoed whole."""
    pipeline = _pipeline(tmp_path)
    proc = cli("run", str(pipeline), "pretrain.lr=" + "x" * 100_000, "--detach", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"error: {pipeline}: stages.pretrain.lr: Input should be a valid number, unable to "
                                   f"parse string as a number (got {'x' * 80!r}… (100000 characters)).")
    proc = cli("run", str(pipeline), "seed=" + "[1, 2, 3, 4, 5, 6, 7, 8, 9, 10] " * 3000, "--detach", check=False)
    assert proc.returncode == 2 and len(proc.stderr) < 400 and "'seed' must be an integer, got '[1, 2, 3" in proc.stderr


def test_a_repeated_block_through_aliases_still_loads(tmp_path):
    """`<<: *base` and a reused value are what aliases are for: far under the bound."""
    from weightsmith.config import load_pipeline

    path = _pipeline(tmp_path, stages=(
        "  tokenizer: &tok {data: docs, vocab_size: 320, min_frequency: 1}\n"
        "  tok2: {<<: *tok, kind: tokenizer, vocab_size: 400}\n"
    ))
    spec = load_pipeline(path)
    assert [(s.name, s.config["vocab_size"]) for s in spec.stages] == [("tokenizer", 320), ("tok2", 400)]


# -- one name rule --------------------------------------------------------------------------------
BAD_NAMES = ["a/b", "../../etc/x", "x y", "n" * 300, "docs@v2"]


def _shown(name: str) -> str:
    return f"{name[:80]!r}… ({len(name)} characters)" if len(name) > 80 else repr(name)


@pytest.mark.parametrize("name", BAD_NAMES)
def test_a_pipeline_dataset_key_follows_the_data_add_name_rule(cli, ws_dir, tmp_path, name):
    pipeline = _pipeline(tmp_path, datasets=f"  {json.dumps(name)}: {{path: {DOCS}, format: text}}\n")
    proc = cli("run", str(pipeline), "--detach", check=False)
    said = f"{_shown(name)} is not a valid dataset name; {NAME_RULE}."
    assert proc.returncode == 2 and proc.stderr.strip() == f"error: {pipeline}: datasets: {said}", proc.stderr
    _nothing_created(ws_dir)
    proc = cli("data", "add", name, str(DOCS), "--format", "text", check=False)  # the same rule, the same words
    assert proc.returncode == 2 and proc.stderr.strip() == f"error: {said}", proc.stderr
    _nothing_created(ws_dir)


@pytest.mark.parametrize("where, edit, says", [
    ("stage", lambda p: p.replace("  pretrain:", '  "pre train":'), "stages: 'pre train' is not a valid stage name"),
    ("model", lambda p: p.replace("name: p\n", "name: p\nmodel: acme/llm\n"), "model: 'acme/llm' is not a valid model name"),
    ("name", lambda p: p.replace("name: p\n", "name: my pipeline\n"),
     "name (the model's name when there is no 'model:'): 'my pipeline' is not a valid model name"),
    ("promote", lambda p: p + "  promote: {model: pretrain, alias: 'champ ion'}\n",
     "stages.promote.alias: 'champ ion' is not a valid alias name"),
])
def test_stage_model_and_alias_names_follow_the_same_rule(cli, ws_dir, tmp_path, where, edit, says):
    pipeline = _pipeline(tmp_path)
    pipeline.write_text(edit(pipeline.read_text()))
    proc = cli("run", str(pipeline), "--detach", check=False)
    assert proc.returncode == 2 and says in proc.stderr and NAME_RULE in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    _nothing_created(ws_dir)


def test_registering_or_versioning_under_a_bad_name_is_refused_in_the_service_too(ws, tmp_path):
    """The entry points that are not YAML: a registration and a KPI file's dataset name."""
    from weightsmith.errors import UserError
    from weightsmith.evals.suite import load_suite
    from weightsmith.workspace.registry import register_version

    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    with pytest.raises(UserError, match="'a/b' is not a valid model name"):
        register_version(ws, "a/b", folder, stage="sft")
    assert not (ws.dir / "artifacts" / "trees").exists()  # refused before anything was stored
    (tmp_path / "held out.jsonl").write_text('{"prompt": "q", "answer": "a"}\n')
    with pytest.raises(UserError, match=r"kpis\.acc\.path \(the file's name names its dataset; set dataset_name: to "
                                        r"another\): 'held out' is not a valid dataset name"):
        load_suite({"name": "s", "kpis": {"acc": {"metric": "exact_match", "path": str(tmp_path / "held out.jsonl"),
                                                  "format": "prompt"}}})


# -- overrides wherever they stand ----------------------------------------------------------------
def test_overrides_are_read_on_either_side_of_options(cli, ws_dir, tmp_path):
    pipeline = _pipeline(tmp_path)
    first = cli.json("run", str(pipeline), "--detach", "pretrain.max_steps=7", "--idempotency-key", "k1",
                     "tokenizer.vocab_size=300")
    second = cli.json("run", "--detach", str(pipeline), "pretrain.max_steps=9")
    db = ws_dir / ".weightsmith" / "weightsmith.db"
    steps = dict(query_db(db, "SELECT id, json_extract(spec, '$.stages[1].config.max_steps') FROM pipelines"))
    vocab = dict(query_db(db, "SELECT id, json_extract(spec, '$.stages[0].config.vocab_size') FROM pipelines"))
    assert steps == {first["pipeline"]: 7, second["pipeline"]: 9} and vocab[first["pipeline"]] == 300
    assert query_db(db, "SELECT verb, state FROM idempotency_keys WHERE key = 'k1'") == [("pipelines.submit", "done")]


def test_every_verb_with_overrides_reads_them_anywhere():
    from weightsmith.cli import build_parser

    parser = build_parser()
    quick = parser.parse_args(["quickstart", "--preset", "smoke", "sft.max_steps=1", "--seed", "3", "dpo.lr=1e-5"])
    assert quick.overrides == ["sft.max_steps=1", "dpo.lr=1e-5"] and quick.seed == 3 and quick.preset == "smoke"
    evaluation = parser.parse_args(["eval", "report", "--html", "out.html", "7"])
    assert evaluation.target == ["report", "7"] and evaluation.html == "out.html"
    bare = parser.parse_args(["run", "p.yaml"])
    assert bare.overrides == [] and bare.detach is False


def test_overrides_reach_stage_and_dataset_names_that_hold_dots(tmp_path):
    """The name rule allows '.', so `tok.v2.vocab_size=400` must find the stage `tok.v2`."""
    from weightsmith.config import load_pipeline

    path = _pipeline(tmp_path, datasets=f"  docs.2024: {{path: {DOCS}, format: text}}\n",
                     stages="  tok.v2: {kind: tokenizer, data: docs.2024, vocab_size: 320}\n")
    spec = load_pipeline(path, ["tok.v2.vocab_size=400", "stages.tok.v2.min_frequency=3", "datasets.docs.2024.format=chat"])
    assert spec.stages[0].config["vocab_size"] == 400 and spec.stages[0].config["min_frequency"] == 3
    assert spec.datasets["docs.2024"].format == "chat"
