"""The REST API adapter (FastAPI): parse the request, call one service verb, return its result model."""
