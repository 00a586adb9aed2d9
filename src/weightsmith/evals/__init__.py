"""Evaluation core: batched generation, KPI metrics, an LLM judge, and the statistics gates use.

- :mod:`weightsmith.evals.generate` — fast batched generation and perplexity over a local model directory.
- :mod:`weightsmith.evals.metrics` — more registered metrics (regex, JSON, JSON Schema, lengths).
- :mod:`weightsmith.evals.judge` — an LLM judge through any OpenAI-compatible endpoint.
- :mod:`weightsmith.evals.stats` — confidence intervals and paired tests for KPIs and gates.
"""
