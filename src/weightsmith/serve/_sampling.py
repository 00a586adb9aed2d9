"""Choosing each row's next token, and its log-probabilities, for a whole batch at once.

Greedy rows take the argmax of the raw logits. Sampling rows follow Hugging Face's warpers in
order (temperature, then nucleus/top-p as Holtzman et al. 2020 define it: the smallest set of most
likely tokens whose mass reaches ``top_p``), then draw by inverting the cumulative distribution with
one uniform number from the row's own ``torch.Generator``. The draw is what makes a seeded request
reproducible whatever else is in the batch: no row consumes another row's random numbers, and the
tensor work is shared by the batch.

Log-probabilities are OpenAI's: the log-softmax of the raw logits (before temperature and top-p),
for the chosen token and the ``top_logprobs`` most likely ones.
"""

from __future__ import annotations

import torch

from weightsmith.serve.types import GREEDY_BELOW


def next_tokens(
    logits: torch.Tensor, temperature: list[float], top_p: list[float], generators: list[torch.Generator | None]
) -> torch.Tensor:
    """The next token of every row.

    Args:
        logits: ``[rows, vocab]`` raw next-token logits (float32).
        temperature: per row; 0 (or below :data:`~weightsmith.serve.types.GREEDY_BELOW`) means greedy.
        top_p: per row, in (0, 1].
        generators: per row, the CPU generator its uniform draw comes from (unused for greedy rows).

    Returns:
        ``[rows]`` long token ids, on the logits' device.
    """
    tokens = logits.argmax(dim=-1)
    sampled = [row for row, t in enumerate(temperature) if t >= GREEDY_BELOW]
    if not sampled:
        return tokens
    device = logits.device
    index = torch.tensor(sampled, device=device)
    temps = torch.tensor([temperature[row] for row in sampled], device=device, dtype=logits.dtype).unsqueeze(1)
    probs = torch.softmax(logits.index_select(0, index) / temps, dim=-1).double()
    uniform = torch.tensor(
        [float(torch.rand((), generator=generators[row], dtype=torch.float64)) for row in sampled],
        dtype=torch.float64, device=device,
    ).unsqueeze(1)
    nucleus = [top_p[row] for row in sampled]
    if any(p < 1.0 for p in nucleus):
        probs, order = probs.sort(dim=-1, descending=True)
        # A token stays when the mass of the tokens more likely than it is still below top_p (so the first always stays).
        before = probs.cumsum(dim=-1) - probs
        probs = probs.masked_fill(before >= torch.tensor(nucleus, dtype=probs.dtype, device=device).unsqueeze(1), 0.0)
    else:
        order = None
    cumulative = probs.cumsum(dim=-1)
    # The first token whose cumulative mass passes u * total: a token with no mass is never chosen.
    position = torch.searchsorted(cumulative, uniform * cumulative[:, -1:], right=True)
    position = position.clamp_(max=probs.shape[-1] - 1)
    chosen = order.gather(1, position) if order is not None else position
    tokens[index] = chosen.squeeze(1)
    return tokens


def token_logprobs(
    logits: torch.Tensor, tokens: torch.Tensor, rows: list[int], top: list[int]
) -> list[tuple[float, list[tuple[int, float]]]]:
    """The chosen token's log-probability and the ``top[i]`` most likely tokens, for the given rows.

    Args:
        logits: ``[rows, vocab]`` raw logits of the step.
        tokens: ``[rows]`` the chosen tokens.
        rows: which rows asked for log-probabilities.
        top: per entry of ``rows``, how many most likely tokens to list (0..20).

    Returns:
        per entry of ``rows``: ``(logprob of the chosen token, [(token id, logprob), ...] most likely first)``.
    """
    index = torch.tensor(rows, device=logits.device)
    logprobs = torch.log_softmax(logits.index_select(0, index).float(), dim=-1)
    chosen = logprobs.gather(1, tokens.index_select(0, index).unsqueeze(1)).squeeze(1).tolist()
    k = min(max(top), logprobs.shape[-1])
    if k:
        values, ids = logprobs.topk(k, dim=-1)
        values, ids = values.tolist(), ids.tolist()
    return [
        (chosen[i], list(zip(ids[i][: top[i]], values[i][: top[i]], strict=True)) if k else [])
        for i in range(len(rows))
    ]
