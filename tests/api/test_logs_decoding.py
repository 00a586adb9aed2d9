"""Log chunks never cut or repeat a character, whatever the limit, and read only what was asked."""

from __future__ import annotations

from weightsmith.service import Context
from weightsmith.service.jobs import _read_range, read_logs
from weightsmith.workspace.models import Job, Run


def test_log_chunks_reassemble_the_log_exactly_at_every_limit(ws, tmp_path):
    log = tmp_path / "stage.log"
    text = "step 1 loss 2.0 — ünïcödé ✓ 日本語\n" * 3
    log.write_bytes(text.encode() + b"\xff bad byte\n")
    with ws.session() as s:
        job = Job(project_id=ws.project_id, stage="sft", kind="sft", state="succeeded", payload={})
        s.add(job)
        s.flush()
        s.add(Run(job_id=job.id, stage="sft", status="succeeded", log_path=str(log)))
        job_id = job.id
    ctx = Context.local(ws)
    whole = read_logs(ctx, {"id": job_id})
    assert whole.done and whole.text == "==> run 1 <==\n" + text + "\ufffd bad byte\n"
    for limit in (4, 5, 7, 64):
        pieces, offset = [], 0
        while True:
            chunk = read_logs(ctx, {"id": job_id, "offset": offset, "limit": limit})
            assert chunk.next_offset > offset or chunk.done
            pieces.append(chunk.text)
            offset = chunk.next_offset
            if chunk.done:
                break
        assert "".join(pieces) == whole.text, limit


def test_a_range_reads_only_its_bytes(tmp_path):
    a = tmp_path / "a"
    a.write_bytes(b"0123456789")
    assert _read_range([(b"HDR", 3), (a, 10)], 2, 4) == (b"R012", 13)
