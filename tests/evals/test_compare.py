"""Experiments a user can write: chat-format eval data, `eval compare`, per-slice KPIs and `eval export`.

Two versions of the tiny chat model: chat@v1 has random weights (it answers nothing right),
chat@v2 has learned three answers. The data holds those three questions with their learned
answers ("learned" rows) and the same questions with answers nobody gives ("trick" rows), so
every paired outcome is known before the models run: v2 passes exactly the learned rows.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.contingency_tables import mcnemar as statsmodels_mcnemar

from weightsmith.errors import NotFound, UserError
from weightsmith.evals.compare import compare_examples
from weightsmith.evals.rows import chat_as_prompt_rows
from weightsmith.evals.suite import load_suite

from helpers import CLI

QUIET = {"OMP_NUM_THREADS": "1"}
SUITE = """
name: compare-kpis
generation: {max_new_tokens: 24, batch_size: 6}
kpis:
  chat_exact: {path: qa.jsonl, format: chat, metric: exact_match}
  typed:      {path: typed.jsonl, format: prompt, metric: exact_match, slice_by: kind}
  chrf:       {path: typed.jsonl, format: prompt, metric: chrf}
"""


@pytest.fixture(scope="module")
def compared(tmp_path_factory, tiny_chat_model, untrained_chat_model):
    """chat@v1 (untrained) and chat@v2 (trained) compared once on the suite, in-process, as the CLI's verb runs."""
    from weightsmith.service import Context, evals
    from weightsmith.workspace import Workspace
    from weightsmith.workspace.registry import register_version

    root = tmp_path_factory.mktemp("compare")
    ws = Workspace.init(root)
    register_version(ws, "chat", Path(untrained_chat_model), stage="pretrain")  # chat@v1
    register_version(ws, "chat", Path(tiny_chat_model.path), stage="sft")  # chat@v2
    learned = list(tiny_chat_model.chats.items())
    qa = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in learned]
    qa += [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": "no such answer"}]}
           for q, _ in learned]
    (root / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in qa))
    typed = [{"prompt": [{"role": "user", "content": q}], "answer": a, "kind": "learned"} for q, a in learned]
    typed += [{"prompt": [{"role": "user", "content": q}], "answer": "no such answer", "kind": "trick"} for q, _ in learned]
    (root / "typed.jsonl").write_text("".join(json.dumps(r) + "\n" for r in typed))
    (root / "suite.yaml").write_text(SUITE)
    ctx = Context.local(ws, adapter="cli")
    doc = evals.compare_models(ctx, {"suite_path": str(root / "suite.yaml"), "a": "chat@v1", "b": "chat@v2",
                                     "device": "cpu"}).model_dump(mode="json")
    return CLI(root), ws, ctx, doc


# -- chat-format data ----------------------------------------------------------------------------
def test_chat_rows_prompt_with_everything_before_the_last_assistant_turn():
    rows = [{"messages": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4", "weight": 0}, {"role": "user", "content": "and 3+3?"},
        {"role": "assistant", "content": "6"},
    ]}]
    assert chat_as_prompt_rows(rows, "qa@v1", "suite.yaml: kpis.acc") == [{
        "prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"},
                   {"role": "assistant", "content": "4"}, {"role": "user", "content": "and 3+3?"}],
        "answer": "6",
    }]
    with pytest.raises(UserError, match=r"kpis.acc: row 1 of qa@v1 has no user turn before its last assistant turn"):
        chat_as_prompt_rows([{"messages": [{"role": "assistant", "content": "hi"}]}], "qa@v1", "suite.yaml: kpis.acc")


def test_a_chat_kpi_scores_the_last_assistant_turn_from_the_chat_template(compared, tiny_chat_model):
    cli, _, _, doc = compared
    assert doc["kpis"]["chat_exact"]["b"]["value"] == 0.5 and doc["kpis"]["chat_exact"]["a"]["value"] == 0.0
    rows = cli.json("eval", "export", str(doc["b"]["run"]), "--kpi", "chat_exact", env=QUIET)["rows"]
    first_question, first_answer = next(iter(tiny_chat_model.chats.items()))
    assert rows[0]["prompt"] == [{"role": "user", "content": first_question}]
    assert rows[0]["reference"] == {"answer": first_answer} and rows[0]["output"] == first_answer
    assert [r["score"] for r in rows] == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0]
    # The suite's chat file was versioned as chat data, as `data add --format chat` would.
    versions = cli.json("data", "list", env=QUIET)
    assert {(v["ref"], v["format"]) for v in versions} >= {("qa@v1", "chat"), ("typed@v1", "prompt")}


def test_a_missing_column_names_every_column_the_metric_reads(compared, tmp_path, monkeypatch):
    from weightsmith.evals.run import prepare_suite

    cli, ws, _, _ = compared
    (tmp_path / "graded.py").write_text("def score(completions, expected, category=None, **_):\n    return [0.0] * len(completions)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    suite = load_suite({"name": "s", "kpis": {"g": {"path": "qa.jsonl", "format": "chat", "metric": "graded:score"}}},
                       base_dir=cli.cwd)
    with pytest.raises(UserError) as caught:
        prepare_suite(ws, suite)
    message = str(caught.value)
    assert "kpis.g: metric 'graded:score' (graded.score) reads the columns 'expected' and 'category' (optional), but row 1" in message
    assert "has the columns answer, prompt (chat rows give 'prompt' and 'answer', the last assistant turn), without 'expected'" in message


# -- compare -------------------------------------------------------------------------------------
def test_compare_reports_known_paired_outcomes_with_mcnemar_and_intervals(compared):
    _, _, _, doc = compared
    assert doc["a"]["model"] == "chat@v1" and doc["b"]["model"] == "chat@v2"
    assert doc["a"]["reused"] is False and doc["b"]["reused"] is False
    typed = doc["kpis"]["typed"]
    # v2 passes the 3 learned rows that v1 fails; they agree (both fail) on the 3 trick rows.
    assert (typed["n"], typed["b_better_on"], typed["a_better_on"]) == (6, 3, 0)
    assert typed["diff"] == pytest.approx(0.5) and typed["value_diff"] == pytest.approx(0.5)
    expected = statsmodels_mcnemar(np.array([[0, 0], [3, 3]]), exact=True).pvalue  # rows: A pass/fail; cols: B
    assert typed["test"] == "mcnemar" and typed["p_value"] == pytest.approx(expected) == pytest.approx(0.25)
    assert typed["better"] is None  # 3 of 3 discordant pairs is not significant at 0.05
    low, high = typed["ci"]
    assert 0.0 <= low <= 0.5 <= high <= 1.0
    assert doc["kpis"]["chrf"]["test"] == "paired_bootstrap" and doc["kpis"]["chrf"]["diff"] > 0


def test_compare_gives_each_slice_its_own_difference(compared):
    _, _, _, doc = compared
    slices = doc["kpis"]["typed"]["slices"]
    assert doc["kpis"]["typed"]["slice_by"] == "kind" and list(slices) == ["learned", "trick"]
    assert slices["learned"]["a"]["value"] == 0.0 and slices["learned"]["b"]["value"] == 1.0
    assert slices["learned"]["diff"] == 1.0 and slices["learned"]["n"] == 3 and slices["learned"]["b_better_on"] == 3
    assert slices["trick"]["diff"] == 0.0 and slices["trick"]["p_value"] == 1.0 and slices["trick"]["better"] is None
    b_learned = slices["learned"]["b"]
    assert b_learned["n"] == 3 and b_learned["ci"] == pytest.approx(
        list(stats.binomtest(3, 3).proportion_ci(0.95, method="wilson")))


def test_compare_reuses_the_stored_runs_of_the_exact_suite(compared):
    from weightsmith.service import evals

    cli, _, ctx, doc = compared
    again = evals.compare_models(ctx, {"suite_path": str(Path(cli.cwd) / "suite.yaml"), "a": "chat@v1", "b": "chat@v2"})
    assert again.a.reused and again.b.reused and (again.a.run, again.b.run) == (doc["a"]["run"], doc["b"]["run"])
    assert again.model_dump(mode="json")["kpis"] == doc["kpis"]


def test_compare_refuses_the_same_version_twice(compared):
    from weightsmith.service import evals

    cli, _, ctx, _ = compared
    with pytest.raises(UserError, match=r"A and B are the same version \(chat@v2\)"):
        evals.compare_models(ctx, {"suite_path": str(Path(cli.cwd) / "suite.yaml"), "a": "chat@v2", "b": "chat@latest"})


def test_eval_compare_cli_prints_the_paired_table_and_json(compared):
    cli, _, _, doc = compared
    runs = [str(doc["a"]["run"]), str(doc["b"]["run"])]
    out = cli("eval", "compare", *runs, env={**QUIET, "COLUMNS": "100"}).stdout
    assert "A = chat@v1" in out and "B = chat@v2" in out
    assert "typed" in out and "kind=learned" in out and "kind=trick" in out and "McNemar" in out
    missing = cli("eval", "compare", "chat@v1", "chat@v2", check=False, env=QUIET)
    assert missing.returncode == 2 and "needs --suite SUITE" in missing.stderr


def test_compare_runs_of_different_suites_is_refused(compared):
    from weightsmith.evals.run import run_suite

    cli, ws, _, doc = compared
    other = run_suite(ws, load_suite({"name": "other", "generation": {"max_new_tokens": 4},
                                      "kpis": {"x": {"path": "typed.jsonl", "format": "prompt", "metric": "chrf"}}},
                                     base_dir=cli.cwd), "chat@v2", device="cpu")
    proc = cli("eval", "compare", str(doc["a"]["run"]), str(other["run"]), check=False, env=QUIET)
    assert proc.returncode == 2 and "are not of the same suite on the same data" in proc.stderr


# -- the statistics, against scipy and statsmodels --------------------------------------------------
def _examples(scores: list[float]) -> list[dict]:
    return [{"position": i, "score": s} for i, s in enumerate(scores)]


@pytest.mark.parametrize("b_wins, a_wins, ties", [(12, 3, 25), (30, 14, 6), (0, 0, 10), (5, 0, 0)])
def test_paired_outcomes_match_statsmodels_exact_mcnemar(b_wins, a_wins, ties):
    kpi = load_suite({"name": "s", "kpis": {"k": {"data": "d", "metric": "exact_match"}}}).kpis["k"]
    a = [0.0] * b_wins + [1.0] * a_wins + [1.0, 0.0] * (ties // 2) + [0.0] * (ties % 2)
    b = [1.0] * b_wins + [0.0] * a_wins + [1.0, 0.0] * (ties // 2) + [0.0] * (ties % 2)
    result = compare_examples(kpi, _examples(a), _examples(b))
    table = [[sum(x == 1 and y == 1 for x, y in zip(a, b, strict=True)), a_wins], [b_wins, sum(x == 0 and y == 0 for x, y in zip(a, b, strict=True))]]
    expected = statsmodels_mcnemar(np.array(table), exact=True).pvalue
    assert result["test"] == "mcnemar" and result["method"] == "exact"
    assert result["p_value"] == pytest.approx(expected, rel=1e-12)  # exact even above 25 discordant pairs
    assert (result["b_better_on"], result["a_better_on"]) == (b_wins, a_wins)
    n = len(a)
    assert result["diff"] == pytest.approx((b_wins - a_wins) / n)
    if b_wins + a_wins:
        # The paired-bootstrap interval agrees with scipy's percentile bootstrap of the mean difference.
        scipy_ci = stats.bootstrap((np.array(b) - np.array(a),), np.mean, method="percentile", n_resamples=20000,
                                   rng=np.random.default_rng(1)).confidence_interval
        assert result["ci"] == pytest.approx([scipy_ci.low, scipy_ci.high], abs=0.03)
    significant = expected < 0.05
    assert result["better"] == ("b" if significant and b_wins > a_wins else "a" if significant else None)


def test_a_lower_is_better_kpi_calls_the_lower_scores_better():
    kpi = load_suite({"name": "s", "kpis": {"k": {"data": "d", "metric": "latency"}}}).kpis["k"]
    rng = np.random.default_rng(0)
    a = rng.normal(1.0, 0.1, size=60)
    b = a - 0.2 + rng.normal(0, 0.02, size=60)  # B is faster on every example
    result = compare_examples(kpi, _examples(list(a)), _examples(list(b)))
    assert result["test"] == "paired_bootstrap" and result["better"] == "b"
    assert result["b_better_on"] == 60 and result["diff"] == pytest.approx(float((b - a).mean()))
    assert result["ci"][1] < 0 and result["p_value"] < 0.01
    assert math.isclose(result["p_value"], 1 / 2001)  # no resample lands as far from 0 under the null


# -- slices --------------------------------------------------------------------------------------
def test_a_run_reports_each_slice_with_its_interval(compared):
    from weightsmith.service import evals

    cli, _, ctx, doc = compared
    shown = evals.show_eval(ctx, {"run": doc["b"]["run"]}).model_dump(mode="json")["kpis"]["typed"]
    assert shown["slice_by"] == "kind"
    assert shown["slices"]["learned"]["value"] == 1.0 and shown["slices"]["trick"]["value"] == 0.0
    low, high = shown["slices"]["trick"]["ci"]
    assert low == 0.0 and high == pytest.approx(stats.binomtest(0, 3).proportion_ci(0.95, method="wilson").high)
    human = cli("eval", "report", str(doc["b"]["run"]), env={**QUIET, "COLUMNS": "100"}).stdout
    assert "kind=learned" in human and "kind=trick" in human
    page = evals.eval_report(ctx, {"run": doc["b"]["run"], "html": True}).html
    assert "<tr class='slice'><td>&nbsp;&nbsp;kind = learned</td>" in page and "kind = trick" in page


@pytest.mark.parametrize("slice_by, data, expected", [
    ("type", "typed.jsonl", "kpis.typed.slice_by: row 1 of typed has no column 'type'; its columns are answer, kind, prompt"),
    ("kind", "qa.jsonl", "kpis.typed.slice_by: row 1 of qa has no column 'kind'; its columns are answer, prompt (a chat row"),
    ("prompt", "typed.jsonl", "column 'prompt' holds list"),
])
def test_a_slice_column_that_rows_lack_is_refused_before_any_compute(compared, slice_by, data, expected):
    from weightsmith.evals.run import prepare_suite

    cli, ws, _, _ = compared
    fmt = "chat" if data == "qa.jsonl" else "prompt"
    suite = load_suite({"name": "s", "kpis": {"typed": {"path": data, "format": fmt, "metric": "exact_match",
                                                        "slice_by": slice_by}}}, base_dir=cli.cwd)
    with pytest.raises(UserError) as caught:
        prepare_suite(ws, suite)
    assert expected in str(caught.value).replace(str(Path(cli.cwd) / data), data.split(".")[0])


def test_slicing_a_suite_keeps_its_stored_runs_reusable(compared):
    from weightsmith.evals.run import prepare_suite

    cli, ws, _, doc = compared
    sliced = prepare_suite(ws, load_suite(Path(cli.cwd) / "suite.yaml"))
    raw = SUITE.replace(", slice_by: kind", "")
    (Path(cli.cwd) / "unsliced.yaml").write_text(raw)
    unsliced = prepare_suite(ws, load_suite(Path(cli.cwd) / "unsliced.yaml"))
    assert sliced.hash == unsliced.hash == doc["suite_hash"]


# -- export --------------------------------------------------------------------------------------
def test_export_writes_every_prediction_as_csv_and_jsonl(compared):
    cli, _, _, doc = compared
    run = str(doc["b"]["run"])
    written = cli.json("eval", "export", run, "--output", "rows.csv", env=QUIET)
    assert written["rows"] == 18 and written["format"] == "csv"  # 3 KPIs x 6 examples, not 5 per KPI
    with open(Path(cli.cwd) / "rows.csv", newline="", encoding="utf-8") as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == 18 and {r["kpi"] for r in table} == {"chat_exact", "typed", "chrf"}
    typed = [r for r in table if r["kpi"] == "typed"]
    assert [r["slice.kind"] for r in typed] == ["learned"] * 3 + ["trick"] * 3
    assert [float(r["score"]) for r in typed] == [1.0] * 3 + [0.0] * 3
    assert all(r["output"] == r["reference.answer"] for r in typed[:3]) and typed[0]["metric"] == "exact_match"
    assert json.loads(typed[0]["prompt"])[0]["role"] == "user"  # chat prompts as JSON in one cell

    jsonl = cli("eval", "export", run, "--format", "jsonl", env=QUIET).stdout
    rows = [json.loads(line) for line in jsonl.splitlines()]
    assert len(rows) == 18 and rows[0]["run"] == doc["b"]["run"] and rows[0]["model"] == "chat@v2"
    assert {"prompt", "reference", "output", "score", "slice", "kpi", "metric", "position"} <= set(rows[0])

    bad = cli("eval", "export", run, "--kpi", "typd", check=False, env=QUIET)
    assert bad.returncode == 2 and "has no KPI 'typd' (did you mean 'typed'?)" in bad.stderr
    nowhere = cli("eval", "export", run, "--output", "no/such/dir/rows.csv", check=False, env=QUIET)
    assert nowhere.returncode == 2 and "--output: folder" in nowhere.stderr


def test_export_pages_through_a_run_for_a_remote_caller_without_server_paths(compared):
    from weightsmith.service import Actor, Context, VERBS, evals

    _, ws, _, doc = compared
    agent = Context.for_actor(ws, Actor(name="agent", kind="token", project=ws.project_name,
                                        scopes=frozenset({"read"}), remote=True), adapter="mcp")
    rows, offset = [], 0
    while True:
        page = evals.export_eval(agent, {"run": doc["b"]["run"], "offset": offset, "limit": 5})
        rows += page.rows
        offset = page.next_offset
        if page.done:
            break
    assert len(rows) == page.total == 18 and len({(r.kpi, r.position) for r in rows}) == 18
    with pytest.raises(NotFound, match="no eval run 999"):
        evals.export_eval(agent, {"run": 999})
    assert str(ws.root) not in json.dumps(page.model_dump(mode="json"))
    compared_runs = evals.compare_runs(agent, {"a": doc["a"]["run"], "b": doc["b"]["run"]})
    assert compared_runs.kpis["typed"].diff == pytest.approx(0.5)
    # The blocking verb stays off the remote adapters; an agent starts eval jobs and compares their runs.
    assert VERBS["evals.compare"].local_only and not VERBS["evals.compare_runs"].local_only
    assert not VERBS["evals.export"].local_only


def test_the_rest_api_serves_a_runs_rows_and_a_comparison_of_two_runs(compared):
    from service_helpers import make_token, start_server

    cli, ws, _, doc = compared
    token = make_token(Path(cli.cwd), ws.project_name, "reader", ["read"])
    server, url = start_server(Path(cli.cwd))
    try:
        import httpx

        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as http:
            page = http.get(f"/v1/evals/{doc['b']['run']}/examples", params={"kpi": "typed", "limit": 4})
            assert page.status_code == 200, page.text
            body = page.json()
            assert (body["total"], len(body["rows"]), body["next_offset"], body["done"]) == (6, 4, 4, False)
            assert body["rows"][0]["slice"] == {"kind": "learned"} and str(ws.root) not in page.text
            rest = http.get(f"/v1/evals/{doc['b']['run']}/examples", params={"kpi": "typed", "offset": 4}).json()
            assert len(rest["rows"]) == 2 and rest["done"] is True
            compared_runs = http.get("/v1/evals/compare", params={"a": doc["a"]["run"], "b": doc["b"]["run"]})
            assert compared_runs.status_code == 200, compared_runs.text
            assert compared_runs.json()["kpis"]["typed"]["p_value"] == pytest.approx(0.25)
            assert http.get("/v1/evals/compare", params={"a": doc["a"]["run"], "b": 999}).status_code == 404
            assert http.get(f"/v1/evals/{doc['b']['run']}/examples", params={"kpi": "nope"}).status_code in (400, 422)
    finally:
        server.terminate()
        server.wait(timeout=30)
