"""`weightsmith jobs page`: training curves of several jobs on one offline HTML page, checked in headless Chromium.

The page is opened in a real browser (Debian's chromium, driven by Playwright) and read back from
the rendered DOM: a polyline per job in each metric's panel, with as many points as the job
logged and a non-empty drawn box, and a legend naming the same jobs. Without a Chromium on the
machine these tests skip, saying how to get one (``make test`` installs it where it can).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from pathlib import Path

import pytest
import yaml

from weightsmith.runs_page import nice_ticks, render_page, tick_labels

from helpers import CLI, EXAMPLES

CHROMIUM = os.environ.get("WEIGHTSMITH_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
READ_PANELS = """() => [...document.querySelectorAll("section.panel")].map(s => ({
  metric: s.dataset.metric,
  curves: [...s.querySelectorAll("polyline.curve")].map(p => {
    const box = p.getBBox();
    return {job: Number(p.dataset.job), points: p.points.numberOfItems, width: box.width, height: box.height,
            x: box.x, y: box.y, stroke: getComputedStyle(p).stroke, title: p.querySelector("title").textContent};
  }),
  dots: [...s.querySelectorAll("circle.point")].map(c => Number(c.dataset.job)),
  legend: [...s.querySelectorAll("ul.legend li")].map(li => ({job: Number(li.dataset.job), text: li.textContent.trim()})),
  note: [...s.querySelectorAll("p.muted")].map(p => p.textContent).join(" "),
}))"""


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium (Debian's package) under Playwright; skips with the reason when there is none."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed: pip install -c constraints.txt -e '.[test]'")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install chromium (or set WEIGHTSMITH_CHROMIUM to one)")
    with sync_playwright() as p:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


def open_page(browser, path: Path) -> tuple[list[dict], list[str], str]:
    """The page's panels as Chromium rendered them, every URL it requested, and a screenshot's path."""
    page = browser.new_page(viewport={"width": 900, "height": 1200})
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(path.as_uri())
    panels = page.evaluate(READ_PANELS)
    shot = path.with_suffix(".png")
    page.screenshot(path=str(shot), full_page=True)
    page.close()
    return panels, requested, str(shot)


def job(job_id: int, stage: str, kind: str = "sft", version: str | None = None) -> dict:
    return {"id": job_id, "stage": stage, "kind": kind, "state": "succeeded", "pipeline": 1,
            "runs": [{"result": {"model_version": version} if version else {}}]}


def points(run: int, rows: dict[int, dict[str, float]]) -> list[dict]:
    return [{"run": run, "step": step, "name": name, "value": value} for step, row in rows.items() for name, value in row.items()]


def test_overlaid_curves_and_legends_as_chromium_draws_them(browser, tmp_path):
    jobs = [job(3, "sft", version="acme@v2"), job(4, "sft_lr_high", version="acme@v3"), job(7, "grpo", "grpo")]
    metrics = {
        3: points(11, {s: {"loss": 3.0 - 0.2 * s, "lr": 1e-4, "grad_norm": 1.0 + 0.1 * s} for s in range(1, 9)}),
        # Resumed after step 4: the second run logs step 4 again (its value wins) and diverges at step 7.
        4: points(12, {s: {"loss": 3.1 - 0.1 * s, "lr": 1e-3, "grad_norm": 2.0} for s in range(1, 5)})
        + points(13, {4: {"loss": 2.5, "lr": 1e-3, "grad_norm": 2.0}, 5: {"loss": 2.4, "lr": 1e-3, "grad_norm": 2.1},
                      6: {"loss": 2.3, "lr": 1e-3, "grad_norm": 2.2}, 7: {"loss": math.nan, "lr": 1e-3, "grad_norm": math.inf}}),
        7: points(14, {s: {"loss": 0.1, "lr": 5e-6, "reward": 0.2 * s, "rewards/exec/mean": 0.1 * s} for s in range(1, 6)})
        + points(14, {5: {"grad_norm": 0.5}}),  # one logged grad_norm: a dot, no line to draw
    }
    page = tmp_path / "page.html"
    page.write_text(render_page(jobs, metrics), encoding="utf-8")
    panels, requested, _ = open_page(browser, page)

    assert requested == [page.as_uri()]  # offline: nothing else is fetched
    by_metric = {p["metric"]: p for p in panels}
    assert list(by_metric) == ["loss", "lr", "grad_norm", "reward", "rewards/exec/mean"]
    labels = {3: "job 3: sft → acme@v2", 4: "job 4: sft_lr_high → acme@v3", 7: "job 7: grpo"}
    for metric in ("loss", "lr", "grad_norm"):
        panel = by_metric[metric]
        assert [c["job"] for c in panel["curves"]] == [3, 4, 7]
        assert [(item["job"], item["text"]) for item in panel["legend"]] == list(labels.items())
        assert [c["title"] for c in panel["curves"]] == list(labels.values())
        assert len({c["stroke"] for c in panel["curves"]}) == 3  # one colour per job
    loss = {c["job"]: c for c in by_metric["loss"]["curves"]}
    assert (loss[3]["points"], loss[4]["points"], loss[7]["points"]) == (8, 6, 5)  # step 4 once; NaN left out
    assert loss[3]["width"] > 600 and loss[3]["height"] > 100  # spans the plot, not collapsed to a point
    assert 0 <= loss[3]["y"] and loss[3]["y"] + loss[3]["height"] <= 280 and loss[3]["x"] >= 72
    assert "1 value(s) that are not finite" in by_metric["loss"]["note"]
    assert re.search(r"<td class=\"num\">nan</td>", page.read_text())  # the jobs table shows the diverged last loss
    assert by_metric["grad_norm"]["dots"] == [7]  # a single point is drawn as a dot
    reward = by_metric["reward"]
    assert [c["job"] for c in reward["curves"]] == [7] and [i["text"] for i in reward["legend"]] == [labels[7]]
    assert reward["curves"][0]["points"] == 5 and reward["curves"][0]["width"] > 600


def test_the_page_is_one_offline_file_and_escapes_what_it_shows(tmp_path):
    text = render_page([job(1, "<b>sft</b>")], {1: points(1, {1: {"loss": 1.0}, 2: {"loss": 0.5}})})
    assert not re.search(r"(src|href)\s*=", text) and "<script" not in text and "<link" not in text
    assert "http://" not in text and "https://" not in text
    assert "&lt;b&gt;sft&lt;/b&gt;" in text and "<b>sft</b>" not in text
    assert "No job here logged lr." in text  # a panel without data says so instead of an empty plot


def test_axis_ticks_are_round_numbers():
    assert nice_ticks(4.98, 5.85) == [5.0, 5.2, 5.4, 5.6, 5.8]
    assert nice_ticks(0, 0.00315) == [0.0, 0.001, 0.002, 0.003]
    assert nice_ticks(1, 2000) == [500.0, 1000.0, 1500.0, 2000.0]
    assert tick_labels(nice_ticks(0, 0.001)) == ["0", "2.0e-04", "4.0e-04", "6.0e-04", "8.0e-04", "1.0e-03"]
    assert tick_labels([0.5, 1.0, 1.5]) == ["0.5", "1", "1.5"]


@pytest.fixture(scope="module")
def trained_jobs(tmp_path_factory, tiny_chat_model):
    """Two real pretrain jobs of one pipeline at different learning rates (the tiny chat model's tokenizer)."""
    from weightsmith.workspace import Workspace

    root = tmp_path_factory.mktemp("runs_page")
    Workspace.init(root)
    common = {"kind": "pretrain", "data": "docs", "tokenizer": tiny_chat_model.path, "size": "tiny", "seq_len": 32,
              "batch_size": 4}
    spec = {
        "name": "curves", "model": "curves", "seed": 3,
        "datasets": {"docs": {"path": str(EXAMPLES / "tiny" / "data" / "docs"), "format": "text"}},
        "defaults": {"device": "cpu", "logging_steps": 1},
        "stages": {"fast": {**common, "max_steps": 5, "lr": 3e-3, "warmup_steps": 0},
                   "slow": {**common, "max_steps": 3, "lr": 1e-4}},
    }
    (root / "pipeline.yaml").write_text(yaml.safe_dump(spec))
    cli = CLI(root)
    done = cli.json("run", "pipeline.yaml", env={"OMP_NUM_THREADS": "1"})
    assert [j["state"] for j in done["jobs"]] == ["succeeded", "succeeded"], done
    return cli, {j["stage"]: j["id"] for j in done["jobs"]}


@pytest.mark.slow
def test_jobs_page_draws_real_training_jobs(browser, trained_jobs):
    cli, ids = trained_jobs
    written = cli.json("jobs", "page", str(ids["fast"]), str(ids["slow"]), "--output", "curves.html")
    assert written["jobs"] == [ids["fast"], ids["slow"]] and {"loss", "lr", "grad_norm"} <= set(written["metrics"])
    panels, requested, shot = open_page(browser, Path(cli.cwd) / "curves.html")
    assert requested == [(Path(cli.cwd) / "curves.html").as_uri()]
    logged = {stage: cli.json("jobs", "metrics", str(job_id)) for stage, job_id in ids.items()}
    by_metric = {p["metric"]: p for p in panels}
    for metric in ("loss", "lr", "grad_norm"):
        curves = {c["job"]: c for c in by_metric[metric]["curves"]}
        for stage, job_id in ids.items():
            steps = {r["step"] for r in logged[stage] if r["name"] == metric}
            assert curves[job_id]["points"] == len(steps) > 1, (metric, stage)
            assert curves[job_id]["width"] > 0
        assert [i["text"] for i in by_metric[metric]["legend"]] == [
            f"job {ids['fast']}: fast → curves@v1", f"job {ids['slow']}: slow → curves@v2"]
    assert Path(shot).stat().st_size > 10_000


def test_jobs_page_refuses_a_missing_job_or_folder(cli):
    proc = cli("jobs", "page", "99", "--output", "page.html", check=False)
    assert proc.returncode == 2 and "no job 99" in proc.stderr and not (Path(cli.cwd) / "page.html").exists()
    proc = cli("jobs", "page", "1", "--output", "nowhere/page.html", check=False)
    assert proc.returncode == 2 and "--output: folder" in proc.stderr
    proc = cli("jobs", "page", "one", "--output", "page.html", check=False)
    assert proc.returncode == 2 and "invalid int value" in proc.stderr
    assert json.loads(cli("jobs", "list", "--json").stdout) == []
