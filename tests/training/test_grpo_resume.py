"""GRPO's prompt order is a function of (seed, epoch), so a run resumed in a later epoch sees the same prompts."""

from __future__ import annotations


def test_a_fresh_sampler_set_to_epoch_k_replays_epoch_k():
    from weightsmith.training.grpo_resume import EpochSeededRepeatSampler

    def sampler():
        return EpochSeededRepeatSampler(range(12), mini_repeat_count=2, batch_size=3, seed=7)

    uninterrupted = sampler()
    epochs = []
    for epoch in range(3):
        uninterrupted.set_epoch(epoch)
        epochs.append(list(uninterrupted))
    assert epochs[0] != epochs[1] != epochs[2]  # still a new shuffle every epoch

    resumed = sampler()  # a new process, resumed inside epoch 2
    resumed.set_epoch(2)
    assert list(resumed) == epochs[2]
    # Each prompt index appears mini_repeat_count times in a row (one group of completions).
    assert epochs[2][0::2] == epochs[2][1::2]
