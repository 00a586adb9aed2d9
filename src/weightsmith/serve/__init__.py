"""Serving model versions on an OpenAI-compatible endpoint.

- :mod:`.types`: the contract between the engine and the server (``Engine``, ``SamplingParams``, events);
- :mod:`.engine`: the batched engine (continuous batching) and a one-request-at-a-time baseline;
- :mod:`.pool`: which version a request names (aliases resolved per request) and the LRU of loaded engines;
- :mod:`.protocol`: OpenAI's request and response shapes and error object;
- :mod:`.completions`: the generating endpoints (whole answers and server-sent event streams);
- :mod:`.app`: the FastAPI app (``weightsmith serve``): auth, routes, errors, ``/metrics``, ``/health``;
- :mod:`.log`: the request log, written in batches by a background thread;
- :mod:`.metrics`: Prometheus metrics, one registry per project.

Nothing heavy is imported here: ``weightsmith.serve.types`` must stay cheap to import.
"""
