"""Data mixing: one training stage on several datasets, each drawn in proportion to its weight.

A stage's ``data:`` may name one dataset or map datasets (or stages that produce one) to
weights, e.g. SFT on QA chats with replay of the document corpus::

    sft: {model: pretrain, data: {qa: 1.0, catalog: 0.3}}

What a mix means, in every stage:

- **The weights are sampling proportions.** Each training example comes from dataset *i* with
  probability ``p_i = w_i / sum(w)``, whatever the datasets' sizes: ``{qa: 1.0, catalog: 0.3}``
  trains on 1/1.3 = 77% QA examples and 23% catalog examples (in expectation; each example's
  source is drawn at random). Weights need not sum to 1; each must be > 0.
- **An example is the stage's unit of training**: a ``seq_len``-token block of packed text
  (pretrain, cpt); a conversation, or a ``max_length``-token block of packed text (sft); a
  preference pair (dpo); a prompt (grpo; each yields ``num_generations`` completions); a
  document (tokenizer). In sft, a text dataset is *replay*: its blocks train as plain
  language-model loss on every token while the chat rows keep their assistant-only loss
  (:func:`weightsmith.data.chat_prepare.prepare_replay`).
- **The stage draws exactly the examples its run trains on**: ``N = max_steps x batch_size x
  grad_accum x processes`` (grpo: divided by ``num_generations``; the tokenizer: as many
  documents as the datasets hold together). The trainer trains on each of the ``N`` once, in
  its own shuffled order, so the counts the stage reports (``result.json``: ``data.mix[].trained``,
  and the log) are exactly how many examples each dataset contributed — on a resumed run too.
- **Within a dataset, every example is used once before any is used again**: each dataset is
  read in a fresh shuffled order on every pass. A small dataset with a large weight is repeated
  (``passes`` > 1 in the report); a large one with a small weight is sampled (``passes`` < 1).
- **Seeded** by the pipeline seed: the same pipeline draws the same examples.

The source of each example is drawn by ``datasets.interleave_datasets(probabilities=p, seed=seed,
stopping_strategy="first_exhausted")``, over each dataset's pass order made at least ``N`` long
(so none runs out before ``N`` draws), and cut at ``N``. Its other strategies stop where the data
says rather than where the run does: ``all_exhausted`` continues until every example of every
dataset was drawn — enormous for a large dataset at a small weight, as its documentation warns —
and restarts a small dataset in the same order; the trainer would then train on an arbitrary part
of that, and the counts would not be what trained.

A plain ``data: name`` is not a mix: the stage trains on that dataset as it always did (each row
once per epoch, as many epochs as ``max_steps`` needs). A mix of one dataset, ``{qa: 1.0}``, uses
its rows the same way — each once per pass — though not in the same order.

Like :mod:`weightsmith.training.common`, this module imports nothing heavy at module level.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from weightsmith.errors import UserError
from weightsmith.training.common import StageInputs, TrainStageConfig, read_rows

if TYPE_CHECKING:  # pragma: no cover - typing only
    from datasets import Dataset


@dataclass
class Source:
    """One dataset of a stage's mix, read.

    Attributes:
        name: as the pipeline names it (the key of the stage's ``data:`` mapping).
        ref: the dataset version it resolved to (``NAME@vN``), when known.
        format: text, chat, preference or prompt.
        weight: its sampling weight.
        rows: the dataset's rows, as read.
        path: the JSONL file they were read from (messages name it).
    """

    name: str
    ref: str | None
    format: str
    weight: float
    rows: list[dict[str, Any]]
    path: Path
    details: dict[str, Any] = field(default_factory=dict)


def read_sources(inputs: StageInputs, kind: str, formats: tuple[str, ...]) -> list[Source]:
    """Read every dataset of the stage's mix (``inputs.data_mix``), checked as :func:`read_rows` checks one.

    Args:
        inputs: the stage inputs, with ``data_mix`` set.
        kind: the stage kind, for messages.
        formats: the formats this stage can train on.

    Raises:
        UserError: a dataset of a format the stage cannot train on (before any is read), or a
            dataset :func:`read_rows` refuses.
    """
    if not inputs.data_mix:
        raise UserError(f"stage '{kind}' was given no data mix: set inputs.data_mix.")
    for source in inputs.data_mix:
        if source.format not in formats:
            raise UserError(
                f"stage '{kind}': dataset '{source.name}' of its mix is {source.format} data, and a {kind} stage "
                f"trains on {' or '.join(formats)} data; take it out of the mix or give a {formats[0]} dataset."
            )
    return [
        Source(
            name=source.name,
            ref=source.ref,
            format=source.format,
            weight=source.weight,
            rows=read_rows(StageInputs(data_path=source.path, data_format=source.format), kind, source.format),
            path=Path(source.path),
        )
        for source in inputs.data_mix
    ]


def examples_per_run(cfg: TrainStageConfig, group: int = 1) -> int:
    """How many examples a run of ``cfg`` trains on: ``max_steps x batch_size x grad_accum x processes / group``.

    Args:
        group: completions per example (GRPO's ``num_generations``: its batch counts completions,
            ``group`` of them per prompt); 1 for the other stages.
    """
    return cfg.max_steps * cfg.batch_size * cfg.grad_accum * cfg.processes // group


def mix_datasets(parts: list[tuple[Source, Dataset]], total: int, seed: int) -> tuple[Dataset, list[int]]:
    """Draw ``total`` examples from the sources' examples, each source with probability weight / sum.

    Args:
        parts: each source with its examples (datasets with the same columns).
        total: how many examples to draw (:func:`examples_per_run`).
        seed: the stage seed.

    Returns:
        The mixed dataset (``total`` rows in draw order; the trainer shuffles it), and how many of
        its rows came from each source, in the order of ``parts``.
    """
    import numpy as np
    from datasets import Dataset, concatenate_datasets, interleave_datasets

    weights = np.asarray([source.weight for source, _ in parts], dtype=np.float64)
    probabilities = (weights / weights.sum()).tolist()
    # The pass orders get their own stream, so they do not depend on how many sources were drawn.
    rng = np.random.default_rng([seed, len(parts)])
    orders, ends, offset = [], [], 0
    for _, examples in parts:
        size = len(examples)
        passes = -(-total // size)  # enough that this source cannot run out before `total` draws
        order = np.argsort(rng.random((passes, size)), axis=1).ravel()  # a fresh permutation per pass
        orders.append(Dataset.from_dict({"row": order + offset}))
        offset += size
        ends.append(offset)
    drawn = interleave_datasets(orders, probabilities=probabilities, seed=seed, stopping_strategy="first_exhausted")
    rows = np.asarray(drawn.with_format("numpy")[:total]["row"], dtype=np.int64)
    counts = np.bincount(np.searchsorted(ends, rows, side="right"), minlength=len(parts))
    mixed = concatenate_datasets([examples for _, examples in parts]).select(rows)
    return mixed, [int(count) for count in counts]


def mix_report(parts: list[tuple[Source, int]], counts: list[int]) -> dict[str, Any]:
    """The ``data`` entry of ``result.json`` for a mix: per dataset its weight, share and what it contributed.

    Args:
        parts: each source with how many distinct examples it offered (conversations, blocks, ...).
        counts: how many examples of the run each source contributed (:func:`mix_datasets`).
    """
    total_weight = sum(source.weight for source, _ in parts)
    total = sum(counts)
    return {
        "examples": total,
        "mix": [
            {
                "name": source.name,
                "ref": source.ref,
                "format": source.format,
                "weight": source.weight,
                "share": round(source.weight / total_weight, 4),
                "examples": offered,
                "trained": trained,
                "trained_share": round(trained / total, 4) if total else 0.0,
                "passes": round(trained / offered, 3),
                **source.details,
            }
            for (source, offered), trained in zip(parts, counts)
        ],
    }


def mix_summary(kind: str, report: dict[str, Any], unit: str = "examples") -> str:
    """One line for the stage log: what each dataset of the mix contributed."""
    parts = [
        f"{entry['name']} ({entry['format']}, weight {entry['weight']:g}) {entry['trained']} "
        f"({entry['trained_share']:.0%}, {entry['passes']:.2g} passes over its {entry['examples']})"
        for entry in report["mix"]
    ]
    return f"{kind} data mix: the run trains on {report['examples']} {unit}: " + "; ".join(parts) + "."


def mix(parts: list[tuple[Source, Any]], total: int, seed: int, kind: str, unit: str = "examples"):
    """Draw the run's examples from each source's examples, log what each contributed, and report it.

    Args:
        parts: each source with its examples: a ``datasets.Dataset`` or a list of dicts, with the
            same keys in every source.
        total: how many examples the run trains on (:func:`examples_per_run`).
        seed: the stage seed.
        kind: the stage kind, for the log line.
        unit: what an example is, for the log line (conversations, blocks, pairs, prompts, ...).

    Returns:
        ``(dataset, report)``: the ``total`` examples, and the ``data`` entry for ``result.json``.

    Raises:
        UserError: a source that offers no example to train on.
    """
    from datasets import Dataset

    from weightsmith.training.common import log_line

    datasets = []
    for source, examples in parts:
        if len(examples) == 0:
            raise UserError(f"stage '{kind}': dataset '{source.name}' of its mix has no {unit} to train on.")
        datasets.append(examples if isinstance(examples, Dataset) else Dataset.from_list(list(examples)))
    mixed, counts = mix_datasets([(source, d) for (source, _), d in zip(parts, datasets)], total, seed)
    report = mix_report([(source, len(d)) for (source, _), d in zip(parts, datasets)], counts)
    log_line(mix_summary(kind, report, unit))
    return mixed, report
