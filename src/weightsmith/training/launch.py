"""Run a stage on N data-parallel processes: ``python -m weightsmith.training.launch N SPEC.json``.

torchrun's launcher, started in-process, runs ``weightsmith.training.runner SPEC.json`` once per rank
(``--standalone``: one machine, a free port). What the job system reads stays what a single-process
stage gives it: exit code 2 when a rank refused its input (its ``error: …`` sentence is in the log),
death by the same signal when a rank was killed, 1 when a rank crashed (its traceback and a last
``stage failed: …`` line are in the log), 0 when every rank finished.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or not argv[0].isdigit() or int(argv[0]) < 1:
        print("usage: python -m weightsmith.training.launch PROCESSES SPEC.json", file=sys.stderr)
        return 2
    processes, spec = int(argv[0]), argv[1]
    # The launcher holds the work folder for every rank: it outlives them, and the worker signals its group.
    from weightsmith.errors import UserError
    from weightsmith.proc import hold_work_lock, work_lock_wait_s

    try:
        work_dir = json.loads(Path(spec).read_text(encoding="utf-8"))["work_dir"]
        hold_work_lock(Path(work_dir), work_lock_wait_s())  # its descriptor stays open until we exit
    except (OSError, ValueError, KeyError, TypeError):
        pass  # a spec the ranks cannot read either: they report it, as error: ... (exit 2)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return UserError.exit_code
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    args = get_args_parser().parse_args(
        ["--standalone", f"--nproc-per-node={processes}", "--max-restarts=0", "-m", "weightsmith.training.runner", spec]
    )
    try:
        run(args)
    except SignalException as exc:  # we were told to stop (a cancel): torchrun has stopped the ranks
        _die_by(exc.sigval)
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()
        code = failure.exitcode
        if code < 0:  # a rank was killed (the OOM killer, a signal): die the same way, so the job says which
            print(f"stage rank {rank} was killed by signal {-code}", file=sys.stderr, flush=True)
            _die_by(-code)
        return code if code in (1, 2) else 1
    return 0


def _die_by(signum: int) -> None:
    if signum not in (signal.SIGKILL, signal.SIGSTOP):  # those two cannot be handled anyway
        signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


if __name__ == "__main__":
    sys.exit(main())
