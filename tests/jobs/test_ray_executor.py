"""``weightsmith worker --executor ray``: each stage runs from a Ray task on a real local Ray head.

The module starts one Ray head on 127.0.0.1 (one CPU, a small object store) in its own process group,
shares it between its tests and tears it down by that group. The workspace is on this machine's disk,
which the head's workers see at the same path (the single-node case of a shared filesystem). The
tests check what the local executor's tests check: states, logs, metrics and outputs; a cancel stops
the stage on the Ray side; a stage killed there fails its job by its signal, and ``jobs retry`` runs it
again from its last checkpoint.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml
from helpers import CLI, EXAMPLES, alive, query_db, tiny_pretrain_pipeline, wait_for

from weightsmith.jobs.executors import StageResources, stage_resources
from weightsmith.proc import work_lock_holder

ENV = {"OMP_NUM_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0"}


@pytest.fixture(scope="module")
def ray_head():
    """The GCS address (``127.0.0.1:PORT``) of a Ray head this module starts, with one CPU."""
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'weightsmith[ray]')")
    ray_cli = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")
    if ray_cli is None:
        pytest.skip("Ray is importable but its 'ray' command is not on PATH")
    # A short folder: Ray's Unix sockets live under it, and a socket path may not exceed 107 bytes.
    temp = Path(tempfile.mkdtemp(prefix="ws-ray-", dir="/tmp"))
    head = subprocess.Popen(
        [ray_cli, "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port", "0", "--num-cpus", "1",
         "--object-store-memory", str(80 * 2**20), "--include-dashboard", "false", "--disable-usage-stats",
         "--temp-dir", str(temp)],
        env={**os.environ, **ENV}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        def port():
            assert head.poll() is None, f"the Ray head exited with code {head.returncode}"
            files = list(temp.glob("session_latest/gcs_server_port_*"))
            return files and files[0].read_text().strip()

        yield f"127.0.0.1:{wait_for(port, timeout=120, what='the Ray head to start')}"
    finally:
        head.send_signal(signal.SIGTERM)  # it drains, then stops every process it started
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(head.pid, signal.SIGKILL)  # anything of the head's left in its group
        except ProcessLookupError:
            pass
        head.wait()
        shutil.rmtree(temp, ignore_errors=True)


def _workspace(tmp_path: Path) -> tuple[CLI, Path]:
    cli = CLI(tmp_path / "ws")
    cli.cwd.mkdir()
    cli("init")
    return cli, cli.cwd / ".weightsmith" / "weightsmith.db"


def _ray_worker(cli: CLI, address: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "weightsmith", "worker", "--executor", "ray", "--address", address, "--poll", "0.2",
         *args],
        cwd=cli.cwd, env={**os.environ, **ENV}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def _stop(worker: subprocess.Popen) -> str:
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
    out, _ = worker.communicate(timeout=120)
    return out


def _job(db: Path, job: int) -> tuple:
    return query_db(db, "SELECT state, error, attempts FROM jobs WHERE id = ?", job)[0]


def _tiny_subset(tmp_path: Path, stages: tuple[str, ...], **max_steps: int) -> Path:
    """examples/tiny's pipeline cut to ``stages`` (its data paths made absolute), with ``max_steps`` per stage."""
    spec = yaml.safe_load((EXAMPLES / "tiny" / "pipeline.yaml").read_text())
    for dataset in spec["datasets"].values():
        dataset["path"] = str(EXAMPLES / "tiny" / dataset["path"])
    full = spec["stages"]
    spec["stages"] = {name: full[name] for name in stages}
    for stage in spec["stages"].values():  # a stage whose upstream was cut starts from that one's upstream
        while stage.get("model") in full and stage["model"] not in stages:
            stage["model"] = full[stage["model"]]["model"]
    for name, steps in max_steps.items():
        spec["stages"][name]["max_steps"] = steps
    path = tmp_path / "tiny-subset.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _stage_on_ray(work_dir: Path) -> dict | None:
    """Who holds a job's work folder: the stage process the Ray task started ({"pid", "host", ...})."""
    holder = work_lock_holder(work_dir)
    return holder if holder and isinstance(holder.get("pid"), int) else None


# ---------------------------------------------------------------------------------------------
# Clear errors (no cluster needed)
# ---------------------------------------------------------------------------------------------


def test_ray_executor_without_ray_installed_says_how_to_install_it(tmp_path):
    cli, _ = _workspace(tmp_path)
    code = ("import sys; sys.modules['ray'] = None  # import ray raises ImportError, as where it is not installed\n"
            "from weightsmith.cli import main\n"
            "sys.exit(main(['worker', '--executor', 'ray', '--address', '127.0.0.1:6379', '--until-idle']))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=cli.cwd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "error: --executor ray needs Ray, which is not installed here: pip install 'weightsmith[ray]'."
    ]


def test_an_unreachable_ray_address_is_one_sentence(tmp_path):
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'weightsmith[ray]')")
    cli, _ = _workspace(tmp_path)
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    proc = cli("worker", "--executor", "ray", "--address", f"127.0.0.1:{closed}", "--until-idle", check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot reach a Ray cluster at 127.0.0.1:{closed} ("), lines
    proc = cli("worker", "--executor", "ray", "--until-idle", check=False)
    assert proc.returncode == 2 and "needs the cluster's address: --address HOST:PORT" in proc.stderr


# ---------------------------------------------------------------------------------------------
# On a local Ray head
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_tiny_examples_stages_run_on_ray_with_states_logs_and_outputs(tmp_path, ray_head):
    cli, db = _workspace(tmp_path)
    pipeline = _tiny_subset(tmp_path, ("tokenizer", "pretrain", "sft"), pretrain=8, sft=4)
    jobs = cli.json("run", str(pipeline), "--detach")["jobs"]
    worker = _ray_worker(cli, ray_head, "--until-idle")
    out = worker.communicate(timeout=600)[0]
    assert worker.returncode == 0, out
    assert f"on the Ray cluster at {ray_head}" in out and "ran 3 job(s)" in out

    for job in jobs:
        shown = cli.json("jobs", "show", str(job["id"]))
        assert (shown["state"], shown["attempts"], shown["error"]) == ("succeeded", 1, None), shown
        (run,) = shown["runs"]
        assert run["status"] == "succeeded" and run["exit_code"] == 0
        assert run["pid"] is None  # the stage ran on a Ray node, not as the worker's child
        log = cli("jobs", "logs", str(job["id"])).stdout
        assert f"dispatched to the Ray cluster at {ray_head} as task " in log and "(1 CPU, 0 GPU)" in log
        assert "running on Ray node " in log
    # The training stages' metrics reached the database from the Ray side, step by step.
    pretrain_steps = sorted({m["step"] for m in cli.json("jobs", "metrics", str(jobs[1]["id"])) if m["name"] == "loss"})
    assert pretrain_steps == [2, 4, 6, 8]  # logging_steps: 2
    # Their outputs were registered with lineage, as under the local executor.
    sft = cli.json("models", "show", "dispatch@v2")
    assert sft["stage"] == "sft" and sft["parent"] == "dispatch@v1"


@pytest.mark.slow
def test_cancel_stops_the_stage_on_the_ray_side(tmp_path, ray_head):
    cli, db = _workspace(tmp_path)
    pipeline = tiny_pretrain_pipeline(tmp_path / "long.yaml", "long", max_steps=100_000, save_steps=50)
    tokenizer_job, job = (j["id"] for j in cli.json("run", str(pipeline), "--detach")["jobs"])
    worker = _ray_worker(cli, ray_head)
    try:
        wait_for(lambda: query_db(db, "SELECT COUNT(*) FROM run_metrics m JOIN runs r ON r.id = m.run_id "
                                      "WHERE r.job_id = ?", job)[0][0] >= 3, timeout=300, what="pretrain to train")
        stage = _stage_on_ray(cli.cwd / ".weightsmith" / "jobs" / str(job) / "work")
        assert stage is not None and alive(stage["pid"])
        cli("jobs", "cancel", str(job))
        wait_for(lambda: _job(db, job)[0] == "cancelled", timeout=120, what="the job to be cancelled")
        assert _job(db, job)[1] == "cancelled by user"
        wait_for(lambda: not alive(stage["pid"]), timeout=30, what="the stage on the Ray side to stop")
        assert worker.poll() is None, "the worker goes on after a cancel"
    finally:
        out = _stop(worker)
    assert _job(db, tokenizer_job)[0] == "succeeded"
    assert f"✗ pretrain (job {job}) cancelled in " in out, out
    (run,) = cli.json("jobs", "show", str(job))["runs"]
    assert run["status"] == "cancelled"


@pytest.mark.slow
def test_a_stage_killed_on_the_ray_side_fails_by_its_signal_and_a_retry_resumes_it(tmp_path, ray_head):
    cli, db = _workspace(tmp_path)
    pipeline = tiny_pretrain_pipeline(tmp_path / "kill.yaml", "kill", max_steps=300, save_steps=10)
    job = cli.json("run", str(pipeline), "--detach")["jobs"][1]["id"]
    work_dir = cli.cwd / ".weightsmith" / "jobs" / str(job) / "work"
    worker = _ray_worker(cli, ray_head)
    try:
        wait_for(lambda: (query_db(db, "SELECT MAX(m.step) FROM run_metrics m JOIN runs r ON r.id = m.run_id "
                                       "WHERE r.job_id = ?", job)[0][0] or 0) >= 23,
                 timeout=300, what="pretrain to pass its second checkpoint")
        stage = _stage_on_ray(work_dir)
        assert stage is not None
        os.kill(stage["pid"], signal.SIGKILL)  # the stage process the Ray task started
        wait_for(lambda: _job(db, job)[0] == "failed", timeout=120, what="the killed job to fail")
        assert _job(db, job)[1] == "stage process killed by signal 9"
        assert worker.poll() is None, "the worker survives its stage being killed"

        cli("jobs", "retry", str(job))  # the retry policy: a failed job runs again, from its checkpoints
        wait_for(lambda: _job(db, job)[0] == "succeeded", timeout=300, what="the retried job to succeed")
    finally:
        _stop(worker)
    shown = cli.json("jobs", "show", str(job))
    assert shown["attempts"] == 2
    killed, resumed = shown["runs"]
    assert (killed["status"], killed["exit_code"]) == ("failed", -signal.SIGKILL)
    assert resumed["status"] == "succeeded" and resumed["result"]["resumed_from_step"] >= 20
    assert resumed["result"]["steps"] == 300
    assert "running on Ray node " in Path(resumed["log"]).read_text()


def _log(db: Path, job: int) -> str:
    """The job's latest run's log, or "" before it has one."""
    rows = query_db(db, "SELECT log_path FROM runs WHERE job_id = ? ORDER BY id DESC LIMIT 1", job)
    try:
        return Path(rows[0][0]).read_text(errors="replace") if rows and rows[0][0] else ""
    except OSError:
        return ""


@pytest.mark.slow
def test_a_stage_no_node_can_hold_says_so_and_a_cancel_withdraws_it(tmp_path, ray_head):
    cli, db = _workspace(tmp_path)
    pipeline = tiny_pretrain_pipeline(tmp_path / "big.yaml", "big", max_steps=4, threads=2)  # the head has 1 CPU
    job = cli.json("run", str(pipeline), "--detach")["jobs"][1]["id"]
    worker = _ray_worker(cli, ray_head)
    try:
        wait_for(lambda: "no node of the cluster has 2 CPU and 0 GPU: the stage waits" in _log(db, job), timeout=300,
                 what="the job's log to say that no node fits it")
        cli("jobs", "cancel", str(job))
        wait_for(lambda: _job(db, job)[0] == "cancelled", timeout=60, what="the waiting job to be cancelled")
    finally:
        _stop(worker)
    assert "running on Ray node" not in _log(db, job)  # it never started


@pytest.mark.slow
def test_a_workers_death_ends_its_stage_on_the_ray_side(tmp_path, ray_head):
    """No stage outlives its worker: Ray ends the dead driver's tasks, and the stage dies with its task."""
    cli, db = _workspace(tmp_path)
    pipeline = tiny_pretrain_pipeline(tmp_path / "orphan.yaml", "orphan", max_steps=100_000, save_steps=1000)
    job = cli.json("run", str(pipeline), "--detach")["jobs"][1]["id"]
    worker = _ray_worker(cli, ray_head)
    try:
        stage = wait_for(lambda: _stage_on_ray(cli.cwd / ".weightsmith" / "jobs" / str(job) / "work"),
                         timeout=300, what="pretrain to start on Ray")
        worker.kill()
        worker.wait(timeout=30)
        wait_for(lambda: not alive(stage["pid"]), timeout=60, what="the orphaned stage to end")
    finally:
        _stop(worker)
    assert _job(db, job)[0] == "running"  # until a reaper, a cancel or a retry sees its heartbeat go stale


def test_a_stage_asks_the_cluster_for_its_threads_or_processes_and_a_gpu_per_process_on_cuda():
    assert stage_resources({}) == StageResources(cpus=1, gpus=0)
    assert stage_resources({"threads": 8, "device": "auto"}) == StageResources(cpus=8, gpus=0)
    assert stage_resources({"processes": 4, "device": "cuda"}) == StageResources(cpus=4, gpus=4)
    assert stage_resources({"processes": 2, "threads": 16, "device": "cuda"}) == StageResources(cpus=16, gpus=2)
