"""TRL trainers fed the tokens a stage prepared (:mod:`weightsmith.data.chat_prepare`), not their own.

DPOTrainer and GRPOTrainer tokenize the dataset themselves; ours are given what the stage already
tokenized, counted and checked before the model loaded, so that what was counted (and refused)
is what trains. Everything else is TRL's. Imported lazily (TRL is heavy).
"""

from __future__ import annotations

from typing import Any

from trl import DPOTrainer

from weightsmith.training.grpo_resume import ResumableGRPOTrainer

ROW_COLUMN = "__weightsmith_row"  # the dataset column that says which prepared row an input is


class PreparedDPOTrainer(DPOTrainer):
    """DPOTrainer over ``prompt_ids`` / ``chosen_ids`` / ``rejected_ids`` rows we tokenized.

    TRL's preparation would tokenize again and drop the pairs whose prompt fills ``max_length``;
    :func:`~weightsmith.data.chat_prepare.prepare_preferences` did both, the same way, and counted.
    """

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        return dataset


class PreparedGRPOTrainer(ResumableGRPOTrainer):
    """GRPOTrainer that generates from the prompt tokens we prepared and hands rewards the rows as read.

    The dataset given to TRL holds only each row's number (:data:`ROW_COLUMN`). At each generation
    the inputs become the rows themselves, so a reward receives every column as the JSONL holds it
    (an Arrow table would merge the keys of nested objects such as ``tools`` across rows, filling
    the gaps with nulls), and the prompts are the token ids counted before training, rendered with
    each row's ``tools``.

    Args:
        rows: the stage's rows, in dataset order.
        prompt_ids: the token ids of each row's prompt (``apply_chat_template`` with the generation prompt).
    """

    def __init__(self, *args, rows: list[dict[str, Any]], prompt_ids: list[list[int]], **kwargs) -> None:
        self._prepared_rows = rows
        self._prepared_prompt_ids = prompt_ids
        self._batch_prompt_ids: list[list[int]] | None = None
        super().__init__(*args, **kwargs)

    def _generate_and_score_completions(self, inputs):
        indices = [int(x[ROW_COLUMN]) for x in inputs]
        self._batch_prompt_ids = [list(self._prepared_prompt_ids[i]) for i in indices]
        rows = [dict(self._prepared_rows[i]) for i in indices]
        columns = dict.fromkeys(key for row in rows for key in row)
        if any(len(row) != len(columns) for row in rows):
            # TRL takes the reward columns from the batch's first row and reads them from every row; rows of
            # a mix's datasets may differ. A column a row lacks reaches the rewards as None, as a row that
            # lacks an Arrow dataset's column would (a reward that needs it was checked on every row).
            rows = [{key: row.get(key) for key in columns} for row in rows]
        try:
            return super()._generate_and_score_completions(rows)
        finally:
            self._batch_prompt_ids = None

    def _tokenize_prompts(self, prompts: list):
        if self._batch_prompt_ids is None or len(self._batch_prompt_ids) != len(prompts):
            return super()._tokenize_prompts(prompts)  # a call we did not prepare for (none in trl 1.16)
        return self._batch_prompt_ids, None, {}
