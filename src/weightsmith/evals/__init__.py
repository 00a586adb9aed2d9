"""Evaluation: KPI suites, batched generation, statistics, gates and reports.

- :mod:`weightsmith.evals.suite` — KPI suites in YAML, validated key by key before any model loads.
- :mod:`weightsmith.evals.run` — run a suite on a model version and store every example.
- :mod:`weightsmith.evals.gate` — candidate vs baseline: floors, maximum regression, paired tests.
- :mod:`weightsmith.evals.report` — JSON and self-contained HTML reports, history across versions.
- :mod:`weightsmith.evals.stages` — ``gate`` and ``promote`` as pipeline stages.
- :mod:`weightsmith.evals.generate` — fast batched generation and perplexity over a local model directory.
- :mod:`weightsmith.evals.metrics` — more registered metrics (regex, JSON, JSON Schema, lengths).
- :mod:`weightsmith.evals.judge` — an LLM judge through any OpenAI-compatible endpoint.
- :mod:`weightsmith.evals.stats` — confidence intervals and paired tests for KPIs and gates.
- :mod:`weightsmith.evals.lm_eval` — lm-evaluation-harness tasks as KPIs (optional extra).
"""
