"""Model versions in formats other runtimes load: GGUF for llama.cpp and Ollama (:mod:`.gguf`)."""
