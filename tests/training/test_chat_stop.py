"""A chat model trained with our tokenizer and SFT recipe stops generating at EOS."""

from __future__ import annotations

from pathlib import Path

from training.training_helpers import stage_context, write_jsonl

CHATS = [
    ("What colour is the sky?", "Blue."),
    ("Name a fruit.", "An apple, of course."),
    ("Say hi.", "Hi there!"),
]


def test_memorized_answers_end_with_eos_when_generated_from_the_saved_model(tmp_path: Path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from weightsmith.data.tokenizer import train_tokenizer
    from weightsmith.training import sft
    from weightsmith.training.common import StageInputs
    from weightsmith.training.models import build_model

    data = write_jsonl(
        tmp_path / "chat.jsonl",
        [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in CHATS],
    )
    tokenizer = train_tokenizer([f"{q} {a}" for q, a in CHATS] * 5, vocab_size=300)
    torch.manual_seed(0)
    build_model("tiny", tokenizer, max_positions=128).save_pretrained(tmp_path / "init")
    tokenizer.save_pretrained(tmp_path / "init")

    # The recipe itself, in-process: assistant-only loss on three conversations until memorized.
    cfg = sft.Config(
        max_steps=60, lr=3e-3, lr_schedule="constant", batch_size=3, logging_steps=20, save_steps=1000, device="cpu"
    )
    ctx = stage_context(tmp_path)
    sft.run(cfg, StageInputs(data_path=data, data_format="chat", model_path=tmp_path / "init"), ctx)

    saved_tokenizer = AutoTokenizer.from_pretrained(ctx.output_dir)
    saved_model = AutoModelForCausalLM.from_pretrained(ctx.output_dir)
    for question, answer in CHATS:
        prompt = saved_tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        # No eos_token_id passed: generation must stop by the saved generation_config alone.
        output = saved_model.generate(**prompt, max_new_tokens=40, do_sample=False)
        new_tokens = output[0, prompt["input_ids"].shape[1] :].tolist()
        assert new_tokens[-1] == saved_tokenizer.eos_token_id, saved_tokenizer.decode(new_tokens)
        assert saved_tokenizer.decode(new_tokens, skip_special_tokens=True) == answer
