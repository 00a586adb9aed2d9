from weightsmith.cli import entrypoint

entrypoint()
