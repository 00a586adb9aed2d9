"""weightsmith: own your language models — train, prove, serve and improve them offline."""

__version__ = "0.1.0"


def __getattr__(name: str):
    # ``weightsmith.Client`` without importing the SDK (and httpx, pydantic models ...) for every CLI call.
    if name == "Client":
        from weightsmith.client import Client

        return Client
    raise AttributeError(f"module 'weightsmith' has no attribute {name!r}")
