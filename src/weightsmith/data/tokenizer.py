"""Byte-level BPE tokenizer training, with special tokens and a chat template that agree.

The tokenizer is byte-level, so any UTF-8 text round-trips. Its EOS token is ``<|im_end|>``, the
same token that closes every turn in the ChatML-style chat template: a model trained on chats
learns to emit EOS at the end of its turn, and generation stops there. The assistant part of each
turn — content and closing ``<|im_end|>`` — sits inside ``{% generation %}`` markers, which is
what TRL's ``assistant_only_loss`` masks on. Documents are separated by the same EOS when packed
for pre-training, so "end of text" and "end of turn" are one token.

The template also shows every OpenAI chat field, in the Hermes/Qwen2.5 style that tool-calling
servers parse: tool definitions in the system turn inside ``<tools></tools>``, each assistant tool
call as ``<tool_call>{"name": ..., "arguments": ...}</tool_call>`` inside the assistant's turn (so
inside the generation span: the calls are learned), tool results as
``<tool_response>...</tool_response>`` in a ``tool`` turn, and a message's ``name`` as ChatML's
``<|im_start|>user name=alice``. The markers are plain text, not special tokens, so tokenizers
trained before them still load and render them. A plain chat renders exactly as it always has.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover - typing only
    from transformers import PreTrainedTokenizerFast

PAD_TOKEN = "<|pad|>"
BOS_TOKEN = "<|bos|>"
EOS_TOKEN = "<|im_end|>"
TURN_START_TOKEN = "<|im_start|>"
# Order fixes the ids: pad=0, bos=1, eos=2, turn start=3.
SPECIAL_TOKENS = [PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, TURN_START_TOKEN]

# Every message renders as "<|im_start|>{role}\n{content}<|im_end|>\n". For the assistant, the
# content and its <|im_end|> are the generation span; the "\n" after it is not, so the last
# token the model is trained to produce in a turn is EOS. With no tools, names or tool calls this
# is byte for byte the template of earlier versions (tests/data/test_chat_template.py pins it).
_NAME = "(' name=' + message['name'] if message['name'] is string and message['name'] else '')"
_CONTENT = "(message['content'] if message['content'] is string else '')"
CHAT_TEMPLATE = (
    # Tool definitions open the conversation, in the system turn (merged with the system message if any).
    "{%- if tools %}"
    "{%- set message = messages[0] %}"
    "{%- if message['role'] == 'system' %}"
    "{{- '<|im_start|>system' + " + _NAME + " + '\\n' + message['content'] + '\\n\\n' }}"
    "{%- else %}{{- '<|im_start|>system\\n' }}{%- endif %}"
    "{{- '# Tools\\n\\nYou may call these functions:\\n<tools>' }}"
    "{%- for tool in tools %}{{- '\\n' + (tool | tojson) }}{%- endfor %}"
    "{{- '\\n</tools>\\n\\nTo call one, write:\\n<tool_call>\\n{\"name\": <function-name>, \"arguments\": "
    "<args-json-object>}\\n</tool_call><|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if tools and loop.first and message['role'] == 'system' %}"  # rendered above, with the tools
    "{%- elif message['role'] == 'assistant' %}"
    "{{- '<|im_start|>assistant' + " + _NAME + " + '\\n' }}"
    "{%- generation %}"
    "{{- " + _CONTENT + " }}"
    # OpenAI writes arguments as a JSON string (shown as is), Hugging Face as an object.
    "{%- for call in message['tool_calls'] or [] %}"
    "{%- set function = call['function'] if call['function'] is mapping else call %}"
    "{%- if " + _CONTENT + " or not loop.first %}{{- '\\n' }}{%- endif %}"
    "{{- '<tool_call>\\n{\"name\": ' + (function['name'] | tojson) + ', \"arguments\": ' }}"
    "{%- if function['arguments'] is string %}{{- function['arguments'] }}"
    "{%- elif function['arguments'] is mapping %}{{- function['arguments'] | tojson }}"
    "{%- else %}{{- '{}' }}{%- endif %}"
    "{{- '}\\n</tool_call>' }}"
    "{%- endfor %}"
    "{{- '<|im_end|>' }}"
    "{%- endgeneration %}"
    "{{- '\\n' }}"
    "{%- elif message['role'] == 'tool' %}"
    "{{- '<|im_start|>tool' + " + _NAME + " + '\\n<tool_response>\\n' + " + _CONTENT
    + " + '\\n</tool_response><|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message['role'] + " + _NAME + " + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

MIN_VOCAB_SIZE = 256 + len(SPECIAL_TOKENS)


def vocab_shortfall(requested: int, trained: int, min_frequency: int) -> str | None:
    """One sentence when BPE training stopped short of the requested vocabulary, else None.

    BPE merges the most frequent pair of symbols until the vocabulary reaches ``vocab_size`` or no
    pair occurs ``min_frequency`` times any more; on a small corpus the second comes first, and the
    tokenizer is silently smaller than asked (a 1024 request on a small corpus gives ~700).

    Args:
        requested: the ``vocab_size`` asked for.
        trained: the tokens the trained tokenizer has (``len(tokenizer)``).
        min_frequency: the setting it was trained with.
    """
    if trained >= requested:
        return None
    lower = (" or lower min_frequency (1 merges every pair seen at least once)" if min_frequency > 1 else "")
    return (f"the tokenizer has {trained:,} tokens, not the {requested:,} vocab_size asked for: no pair of symbols "
            f"in the corpus occurs {min_frequency} or more times any more (min_frequency: {min_frequency}); "
            f"add text{lower} for a larger vocabulary, or set vocab_size: {trained} to say what you get")


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int,
    min_frequency: int = 2,
    model_max_length: int = 2048,
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on ``texts`` and wrap it for ``transformers``.

    Args:
        texts: the training corpus, one document per item (read once, streamed).
        vocab_size: the target vocabulary, including the 256 byte symbols and the special tokens;
            a small corpus may yield fewer tokens than this.
        min_frequency: a pair must occur this often to be merged.
        model_max_length: the longest input the tokenizer will warn about (saved in its config).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if vocab_size < MIN_VOCAB_SIZE:
        raise ValueError(f"vocab_size must be at least {MIN_VOCAB_SIZE} (256 bytes + special tokens), got {vocab_size}")
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        # All 256 byte symbols are in the vocabulary even if the corpus never uses them, so no
        # input is ever out of vocabulary.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        extra_special_tokens=[TURN_START_TOKEN],
        chat_template=CHAT_TEMPLATE,
        model_max_length=model_max_length,
        padding_side="right",
    )
