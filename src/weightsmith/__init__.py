"""weightsmith: own your language models — train, prove, serve and improve them offline."""

__version__ = "0.1.0"
