"""Helpers of the serving tests (tests/serve): tiny chat-model versions that answer by heart, a real ``weightsmith serve``.

The versions are 2-layer Llamas (width 64) trained for a few seconds until they answer a few prompts
by heart, so greedy answers are sharp and known: ``tiny@v1`` says "hello world" to "hi", ``tiny@v2``
"goodbye moon". ``tiny@champion`` starts on v1. Project ``acme`` holds them; project ``rival`` holds
its own model, which acme's tokens must not see.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from helpers import memorise, one_torch_thread

CHAT_TEMPLATE = (
    "{% for m in messages %}<{{ m.role }}>{{ m.content }}<eos>{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)
V1_CHATS = {
    "hi": "hello world",
    "count": "one two three four five six seven eight nine ten",
    "pet": "the cat sat on the mat",
}
V2_CHATS = {**V1_CHATS, "hi": "goodbye moon"}
PLAIN = {"a dog": " ran in the park"}
CONTEXT = 256


def _tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    words = [*V1_CHATS, *V1_CHATS.values(), *V2_CHATS.values(), *PLAIN, *PLAIN.values(), "how are you today?"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<pad>", "<eos>", "<user>", "<assistant>", "<system>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(words, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<eos>", pad_token="<pad>")
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def train_tiny_chat_model(directory: Path, chats: dict[str, str], seed: int = 0, size: str | None = None) -> Path:
    """Train and save a tiny Llama that answers ``chats`` (and PLAIN as plain text) by heart; given a ``size``
    (a key of ``weightsmith.training.models.MODEL_SIZES``, e.g. ``tiny-moe``), the model that size builds."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = _tokenizer()
    texts = [f"<user>{q}<eos><assistant>{a}<eos>" for q, a in chats.items()] + [f"{q}{a}<eos>" for q, a in PLAIN.items()]
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=CONTEXT,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=None)
    with one_torch_thread(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if size is None:
            model = LlamaForCausalLM(config)
        else:
            from weightsmith.training.models import build_model

            model = build_model(size, tokenizer, max_positions=CONTEXT)
        memorise(model, tokenizer, texts, steps=80)  # the loss is flat from about step 60 (only the first tokens stay uncertain)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@dataclass
class ServeEnv:
    ws_dir: Path
    tokens: dict[str, str]  # name -> secret
    url: str = ""
    proc: subprocess.Popen | None = None
    output: list[str] = field(default_factory=list)

    def client(self, token: str = "acme", **kw):
        from openai import OpenAI

        return OpenAI(base_url=f"{self.url}/v1", api_key=self.tokens[token], max_retries=0, timeout=60, **kw)

    def async_client(self, token: str = "acme", **kw):
        from openai import AsyncOpenAI

        return AsyncOpenAI(base_url=f"{self.url}/v1", api_key=self.tokens[token], max_retries=0, timeout=60, **kw)

    def http(self, token: str | None = "acme"):
        import httpx

        headers = {"Authorization": f"Bearer {self.tokens[token]}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)

    def context(self, project: str = "acme"):
        from weightsmith.service import Context
        from weightsmith.workspace import Workspace

        return Context.local(Workspace.open(self.ws_dir, project=project))


def start_serve(ws_dir: Path, *args: str, project: str = "acme", prelude: str | None = None
                ) -> tuple[subprocess.Popen, str]:
    """``weightsmith serve ARGS --port 0`` in ``ws_dir``; returns the process and its base URL.

    ``prelude``: Python that runs the CLI instead of ``-m weightsmith`` (``python -c PRELUDE serve ...``), e.g.
    :data:`faulty_llama.PRELUDE`, which registers a model class first.

    Its stderr goes to a file beside the workspace (``proc.stderr_path``), so a chatty server never blocks on a
    full pipe.
    """
    import tempfile

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    stderr = tempfile.NamedTemporaryFile("w+", prefix="serve-", suffix=".log", dir=ws_dir.parent, delete=False)
    launch = ["-c", prelude] if prelude else ["-m", "weightsmith"]
    proc = subprocess.Popen([sys.executable, *launch, "serve", *args, "--port", "0", "--project", project,
                             "--workspace", str(ws_dir)], cwd=ws_dir, stdout=subprocess.PIPE, stderr=stderr,
                            text=True, env=env)
    proc.stderr_path = Path(stderr.name)
    line = proc.stdout.readline()
    if "listening on http://" not in line:
        proc.kill()
        proc.wait()
        raise AssertionError(f"weightsmith serve did not start: {line}{proc.stdout.read()}"
                             f"{proc.stderr_path.read_text()[-3000:]}")
    return proc, line.rsplit(" ", 1)[1].strip()


def stream_in_background(url: str, key: str, body: dict) -> tuple[list[str], threading.Thread]:
    """POST ``body`` (with ``stream: true``) to ``/v1/completions`` from a thread; returns, once the first event
    has arrived, the list the response's non-empty lines go into and the thread (join it for the rest)."""
    import httpx

    lines: list[str] = []
    started = threading.Event()

    def stream() -> None:
        with httpx.stream("POST", f"{url}/v1/completions", headers={"Authorization": f"Bearer {key}"}, timeout=60,
                          json=body) as response:
            for line in response.iter_lines():
                if line:
                    lines.append(line)
                    started.set()

    reader = threading.Thread(target=stream)
    reader.start()
    assert started.wait(30), "the stream did not start"
    return lines, reader


@contextmanager
def running(ws_dir: Path, *args: str, prelude: str | None = None) -> Iterator[tuple[subprocess.Popen, str]]:
    proc, url = start_serve(ws_dir, *args, prelude=prelude)
    try:
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()




def cli_main(capsys, *args: str) -> tuple[int, str, str]:
    """``weightsmith ARGS`` run in this process (the real parser and handlers, without a fresh interpreter's
    imports): its exit code, stdout and stderr. An argparse refusal (SystemExit) counts as its code."""
    from weightsmith.cli import main

    capsys.readouterr()
    try:
        code = main(list(args))
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err
