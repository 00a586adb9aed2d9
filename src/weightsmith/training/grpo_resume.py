"""Make TRL's GRPO data order resumable: the prompt shuffle becomes a function of (seed, epoch).

TRL's ``RepeatSampler`` draws each epoch's permutation from one ``torch.Generator`` seeded once,
so epoch k's order depends on how many epochs this *process* has iterated. A run resumed in
epoch k >= 1 starts a fresh sampler and replays epoch 0's order — re-training prompts already
seen and skipping others, so the resumed run drifts from an uninterrupted one. The Trainer calls
``set_epoch`` on the sampler at every epoch (through accelerate's ``DataLoaderShard``); we reseed
there, as the Trainer's own seedable sampler does for the other recipes. Imported lazily (heavy).
"""

from __future__ import annotations

from trl import GRPOTrainer
from trl.trainer.utils import RepeatSampler


class EpochSeededRepeatSampler(RepeatSampler):
    """``RepeatSampler`` whose shuffle for epoch ``e`` is seeded with ``seed + e``."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        if self.shuffle:
            self.generator.manual_seed((self.seed or 0) + self.epoch)
        return super().__iter__()


class ResumableGRPOTrainer(GRPOTrainer):
    """GRPOTrainer with the epoch-seeded sampler; everything else is TRL's."""

    def _get_train_sampler(self, dataset=None):
        sampler = super()._get_train_sampler(dataset)
        if type(sampler) is not RepeatSampler:  # a TRL version that changed the sampler: keep its own
            return sampler
        return EpochSeededRepeatSampler(
            data_source=sampler.data_source,
            mini_repeat_count=sampler.mini_repeat_count,
            batch_size=sampler.batch_size,
            repeat_count=sampler.repeat_count,
            shuffle=sampler.shuffle,
            seed=sampler.seed,
        )
