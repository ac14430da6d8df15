"""What `aeclass sweep` runs when it is not told: a plan per kind of data.

A plan is the sweep's defaults: the strategies, label counts and seeds of the grid; options below any preset,
config file or flag; and per strategy a recipe, used only when no --preset or --config names one (a recipe
mixed under another preset would be neither). Whatever the user names wins: a plan fills in only what was
left unset. The kind of data picks the plan:

- `default` (grey images: digits, MNIST, a folder of greyscale images): every strategy at 100 / 1000 / all labels,
  3 seeds, 10 epochs each, input noise 0.2 for the denoising reconstruction. Minutes on digits, hours on MNIST.
- `photos` (colour images: CIFAR-10, a folder of RGB photos): the two strategies that matter on photos at
  250 / 4000 / all labels, 1 seed, each with the recipe measured in benchmarks/cifar_few_labels.py, shortened
  (see docs/sweeps.md for what it costs on 2 cores), and the test set scored once, after a cell's last epoch:
  a per-epoch scoring of CIFAR-10's 10,000 test images and their mirrors took about 20 s on 2 cores, 60 % of
  an epoch of 250-label training, and the sweep reads only the final figures (--test-every 1 brings the
  curves back):
  - `supervised`: the `fastcnn-cifar` preset (airbench94's network and optimiser, 15 epochs);
  - `semi`: the `cifar-4000` recipe (FixMatch's parts with the decoder's masked reconstruction, docs/strategies.md)
    in 4 epochs instead of 12, its warm-up scaled alike. It is not run at 'all' labels: with every image
    labelled there is nothing unlabelled for it to learn from, and it would cost the most of any cell.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .presets import PRESETS

_RUN_KEYS = ("data", "labels", "strategy")  # the grid's, not a plan's


@dataclass(frozen=True)
class SweepPlan:
    name: str
    strategies: tuple[str, ...]
    labels: tuple[str, ...]
    seeds: int
    options: dict                                # for every strategy, below preset / config / flags
    recipes: dict = field(default_factory=dict)  # per strategy, above `options`, when no preset / config is given
    skip: tuple[tuple[str, str], ...] = ()       # (strategy, label count) cells the plan leaves out

    def base(self, strategy: str, own_recipe: bool = True) -> dict:
        return {**self.options, **(self.recipes.get(strategy, {}) if own_recipe else {})}


def _recipe(preset: str, **changes) -> dict:
    return {**{k: v for k, v in PRESETS[preset].items() if k not in _RUN_KEYS}, **changes}


DEFAULT = SweepPlan("default", ("supervised", "pretrain-finetune", "linear-probe", "joint", "semi"),
                    ("100", "1000", "all"), 3, {"epochs": 10, "noise": 0.2})

# Under a user's preset or config the photos plan sets what the default plan does (as sweeps always did), and
# scores the test set only at the end; its recipes say noise 0, as their presets mean by leaving it out.
PHOTOS = SweepPlan(
    "photos", ("supervised", "semi"), ("250", "4000", "all"), 1, {**DEFAULT.options, "test_every": 0},
    recipes={"supervised": _recipe("fastcnn-cifar", noise=0.0),
             # 12 -> 4 epochs; the warm-up stays the recipe's 23 % of the run (2.8 of 12 epochs).
             "semi": _recipe("cifar-4000", epochs=4, warmup_epochs=0.93, noise=0.0)},
    skip=(("semi", "all"),))


def plan_for(channels: int | None) -> SweepPlan:
    """The plan for images of `channels` channels: colour images are photos (None: not known, the default)."""
    return PHOTOS if channels == 3 else DEFAULT
