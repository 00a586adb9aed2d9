"""Registry aliases: promote needs a passing gate (or a recorded --force), rollback is one verb, every move is kept.

No model is loaded here, so the versions are stand-in directories; gates are written as rows,
as a real gate would leave them (test_gate.py runs real ones end to end).
"""

from __future__ import annotations

import json
import pytest

from weightsmith.errors import UserError
from weightsmith.workspace.aliases import promote, rollback
from weightsmith.workspace.models import EvalRun, Gate
from weightsmith.workspace.registry import register_version, resolve_model


@pytest.fixture
def versions(ws, tmp_path) -> list[dict]:
    """quill@v1..v3: stand-in model directories (distinct contents, so distinct versions)."""
    out = []
    for i in range(1, 4):
        folder = tmp_path / f"model{i}"
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({"model_type": "llama", "seed": i}))
        (folder / "model.safetensors").write_bytes(b"")
        out.append(register_version(ws, "quill", folder, stage="sft"))
    return out


def record_gate(ws, candidate: dict, baseline: dict | None, *, passed: bool, suite: str = "kpis") -> int:
    """A gate row like run_gate leaves (its eval runs are empty: only the verdict matters to promote)."""
    with ws.session() as s:
        runs = []
        for model in (candidate, baseline):
            if model is None:
                runs.append(None)
                continue
            run = EvalRun(project_id=ws.project_id, suite_name=suite, suite_hash="0" * 64, model_version_id=model["id"],
                          model_ref=model["ref"], device="cpu", seconds=0.0, started_at=_now())
            s.add(run)
            s.flush()
            runs.append(run.id)
        gate = Gate(project_id=ws.project_id, suite_name=suite, suite_hash="0" * 64, candidate_version_id=candidate["id"],
                    baseline_version_id=baseline["id"] if baseline else None, candidate_run_id=runs[0],
                    baseline_run_id=runs[1], passed=passed, floors_only=baseline is None)
        s.add(gate)
        s.flush()
        return gate.id


def _now():
    from weightsmith.workspace.models import utcnow

    return utcnow()


def test_promote_without_a_gate_is_refused_with_what_to_do(cli, versions):
    proc = cli("models", "promote", "quill@v1", "--alias", "champion", check=False)
    assert proc.returncode == 2
    assert "refusing to promote quill@v1 to 'champion': it has not been through a gate" in proc.stderr
    assert "weightsmith gate SUITE --candidate quill@v1 --baseline quill@champion" in proc.stderr
    assert "--force" in proc.stderr
    proc = cli("models", "show", "quill@champion", check=False)
    assert proc.returncode == 2 and "no alias 'champion'" in proc.stderr

    proc = cli("models", "promote", "quill@v1", "--alias", "champion", "--force", check=False)
    assert proc.returncode == 2 and "needs --reason" in proc.stderr
    proc = cli("models", "promote", "quill@v1", "--alias", "v2", "--force", "--reason", "x", check=False)
    assert proc.returncode == 2 and "cannot be an alias" in proc.stderr


def test_forced_promotion_is_recorded_with_who_and_why(cli, versions):
    doc = cli.json("models", "promote", "quill@v2", "--alias", "champion", "--force", "--reason", "hotfix for INC-42",
                   env={"WEIGHTSMITH_ACTOR": "alice"})
    assert doc == {**doc, "version": "quill@v2", "previous": None, "moved": True, "forced": True, "gate": None,
                   "actor": "alice", "reason": "hotfix for INC-42"}

    shown = cli.json("models", "show", "quill@champion")
    assert shown["ref"] == "quill@v2" and shown["version"] == 2 and shown["aliases"] == ["champion"]
    assert shown["resolved_from"] == "quill@champion"

    (alias,) = cli.json("models", "aliases", "quill")["aliases"]
    assert alias["alias"] == "champion" and alias["version"] == "quill@v2"
    (move,) = alias["moves"]
    assert move == {**move, "action": "promote", "from": None, "to": "quill@v2", "forced": True, "actor": "alice",
                    "reason": "hotfix for INC-42"}


def test_a_passing_gate_against_the_current_holder_lets_promote_move_the_alias(ws, versions):
    v1, v2, v3 = versions
    first = record_gate(ws, v1, None, passed=True)  # floors only: a first champion
    assert promote(ws, "quill@v1", "champion", actor="ci")["gate"] == first

    record_gate(ws, v2, v1, passed=False)
    with pytest.raises(UserError, match="its latest gate, #[0-9]+, refused it"):
        promote(ws, "quill@v2", "champion")
    passing = record_gate(ws, v2, v1, passed=True)
    moved = promote(ws, "quill@v2", "champion", actor="ci")
    assert moved == {**moved, "version": "quill@v2", "previous": "quill@v1", "forced": False, "gate": passing}

    # v3 passed against v1, but the champion is v2 now: that gate is stale.
    record_gate(ws, v3, v1, passed=True)
    with pytest.raises(UserError, match="compared it with quill@v1, not with the current holder"):
        promote(ws, "quill@v3", "champion")
    # A gate on another suite than the one that crowned the champion does not count either.
    record_gate(ws, v3, v2, passed=True, suite="other-suite")
    with pytest.raises(UserError, match="ran suite 'other-suite', but this alias is gated by 'kpis'"):
        promote(ws, "quill@v3", "champion")
    assert resolve_model(ws, "quill@champion")["ref"] == "quill@v2"
    assert promote(ws, "quill@v2", "champion")["moved"] is False  # already there: nothing recorded


def test_rollback_walks_back_through_earlier_holders_and_keeps_every_move(cli, ws, versions):
    for ref in ("quill@v1", "quill@v2", "quill@v3"):
        cli("models", "promote", ref, "--alias", "champion", "--force", "--reason", f"test {ref}")

    doc = cli.json("models", "rollback", "quill", "--alias", "champion", "--reason", "v3 broke dispatch")
    assert doc == {**doc, "version": "quill@v2", "previous": "quill@v3", "reason": "v3 broke dispatch"}
    assert cli.json("models", "show", "quill@champion")["ref"] == "quill@v2"
    assert cli.json("models", "rollback", "quill", "--alias", "champion")["version"] == "quill@v1"  # not back to v3
    proc = cli("models", "rollback", "quill", "--alias", "champion", check=False)
    assert proc.returncode == 2 and "no earlier holder to roll back to" in proc.stderr

    moves = cli.json("models", "aliases", "quill")["aliases"][0]["moves"]
    assert [(m["action"], m["from"], m["to"]) for m in moves] == [
        ("promote", None, "quill@v1"),
        ("promote", "quill@v1", "quill@v2"),
        ("promote", "quill@v2", "quill@v3"),
        ("rollback", "quill@v3", "quill@v2"),
        ("rollback", "quill@v2", "quill@v1"),
    ]
    proc = cli("models", "rollback", "quill", "--alias", "champoin", check=False)
    assert proc.returncode == 2 and "did you mean 'champion'" in proc.stderr


def test_an_alias_resolves_to_the_concrete_version_everywhere(ws, versions):
    v1 = versions[0]
    promote(ws, "quill@v1", "candidate", force=True, reason="try it", actor="bob")
    assert resolve_model(ws, "quill@candidate") == {"path": v1["path"], "id": v1["id"], "ref": "quill@v1"}
