"""Many processes through torchrun: DistributedDataParallel, gloo on CPU and NCCL on CUDA.

    torchrun --nproc_per_node=2 -m aeclass train --data mnist --labels 100 --strategy semi --out runs/x

Under torchrun (WORLD_SIZE > 1) `aeclass train` joins the process group the launcher set up and every
rank runs the same engine on the same data:
- The batches are the single-process run's: every rank draws the same global batch from the same
  generator (and augments it the same way), then trains on its own rows of it (rows rank, rank + world, ...).
  So --batch-size stays the global batch, an epoch has the same steps and the schedule is unchanged; the
  gradients are averaged by DistributedDataParallel, and the arithmetic equals one process on the whole
  batch except for BatchNorm, whose batch statistics are each rank's own rows (rank 0's running statistics
  are broadcast, DDP's default; SyncBatchNorm is GPU-only in torch).
- The random draws a strategy makes inside its step (noise, cut-outs, masks) come from per-rank generators
  (seeded from the run's seed and the rank), so the ranks do not corrupt their rows identically; their
  states are gathered into last.pt, and a run resumed with the same number of processes continues exactly.
- State every rank must agree on stays in step: a NaN/inf loss on any rank makes every rank's averaged
  gradients non-finite, and every rank checks them after backward (all stop at the same step), BatchNorm buffers and the weight average are broadcast from rank 0 after each epoch, the epoch's
  logged losses are averaged over ranks, and running statistics a step keeps (semi's distribution alignment)
  average over ranks (`mean_over_ranks`). Pseudo-labels are computed by every rank from the same model and
  images, so they agree without being sent.
- Only rank 0 takes the run directory's lock and writes config.yaml, run.json, metrics and checkpoints; the
  others train silently. Their test evaluations are the same computation, so every rank makes the same
  early-stopping and checkpoint decisions.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace

import torch
from torch import nn

from .errors import ConfigError


@dataclass(frozen=True)
class Context:
    rank: int
    world: int
    local_rank: int
    local_world: int
    backend: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0


_CONTEXT: Context | None = None


def launched() -> bool:
    """Whether this process is one of several that torchrun (or another launcher) started."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1) > 1


def context() -> Context | None:
    return _CONTEXT


def is_main() -> bool:
    """Rank 0, or a single process (also after teardown: the launcher's RANK says)."""
    if _CONTEXT is not None:
        return _CONTEXT.is_main
    return not launched() or int(os.environ.get("RANK", "0") or 0) == 0


def setup(device_name: str) -> Context | None:
    """Join the launcher's process group (once per process); None when not launched distributed."""
    global _CONTEXT
    if _CONTEXT is not None or not launched():
        return _CONTEXT
    import torch.distributed as dist
    missing = [k for k in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise ConfigError(f"WORLD_SIZE={os.environ['WORLD_SIZE']} but {', '.join(missing)} not set: start "
                          "distributed training with torchrun (torchrun --nproc_per_node=N -m aeclass train ...)")
    local_rank = int(os.environ["LOCAL_RANK"])
    cuda = device_name.startswith("cuda") or (device_name == "auto" and torch.cuda.is_available())
    if cuda:
        torch.cuda.set_device(local_rank)
    backend = "nccl" if cuda else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend)
    _CONTEXT = Context(dist.get_rank(), dist.get_world_size(), local_rank,
                       int(os.environ.get("LOCAL_WORLD_SIZE", dist.get_world_size())), backend)
    return _CONTEXT


def device_name(name: str) -> str:
    """The device of this rank: on CUDA the local rank's GPU, whatever --device named."""
    ctx = _CONTEXT
    if ctx is not None and ctx.backend == "nccl":
        return f"cuda:{ctx.local_rank}"
    return name


def barrier() -> None:
    """Wait for every rank (no-op in one process)."""
    if _CONTEXT is not None:
        import torch.distributed as dist
        dist.barrier()


def teardown() -> None:
    global _CONTEXT
    if _CONTEXT is None:
        return
    import torch.distributed as dist
    if dist.is_initialized():
        dist.destroy_process_group()
    _CONTEXT = None


def rank_generator(seed: int) -> torch.Generator:
    """This rank's generator for the draws a step makes (Batch.gen); also reseeds the global RNG per rank."""
    rank = _CONTEXT.rank if _CONTEXT else 0
    torch.manual_seed(seed * 7919 + 104729 * (rank + 1))  # distinct streams per rank, fixed by the seed
    return torch.Generator().manual_seed(seed * 7919 + 15485863 * (rank + 1))


def shard(batch, ctx: Context, gen: torch.Generator):
    """This rank's rows of a global batch. Interleaved rather than contiguous, so a batch made of a labelled
    part and an unlabelled part gives every rank its share of both."""
    rows = slice(ctx.rank, None, ctx.world)
    return replace(batch, x=batch.x[rows], y=batch.y[rows], gen=gen)


class _PhaseStep(nn.Module):
    """The model with a phase's step as its forward, so DistributedDataParallel sees every forward a step
    makes (steps call the model's parts, encode/decode/classify, not only model())."""

    def __init__(self, model: nn.Module, step):
        super().__init__()
        self.model, self.step = model, step

    def forward(self, batch):
        return self.step(self.model, batch)


def wrap(model: nn.Module, step, device: torch.device):
    """A step function that runs `step` through DistributedDataParallel. Built per phase, after the phase has
    frozen what it freezes: DDP synchronises the parameters that require gradients when it is built.
    find_unused_parameters: a step may leave a trained part unused in some batches (e.g. no labelled rows)."""
    from torch.nn.parallel import DistributedDataParallel as DDP
    ids = [device.index] if device.type == "cuda" else None
    ddp = DDP(_PhaseStep(model, step), device_ids=ids, find_unused_parameters=True)
    return lambda _model, batch: ddp(batch)


def all_finite(loss: torch.Tensor, params) -> bool:
    """Whether the step is finite on every rank, checked after backward: a rank's NaN/inf loss gives it
    non-finite gradients, which the gradient all-reduce hands to every rank, so each rank sees it at the same
    step without a collective of its own (a per-step all-reduce of a flag cost 30 % of a small model's
    throughput). A loss that is non-finite with finite gradients stops only its rank; torchrun then stops
    the others."""
    grads = [p.grad for p in params if p.grad is not None]
    finite = bool(torch.isfinite(loss.detach()))
    if finite and grads:
        finite = bool(torch.isfinite(torch.stack(torch._foreach_norm(grads))).all())
    return finite


def mean_over_ranks(t: torch.Tensor) -> torch.Tensor:
    """The mean of `t` over ranks (t itself in a single process); not differentiable: for running statistics."""
    if _CONTEXT is None:
        return t
    import torch.distributed as dist
    t = t.detach().clone()
    dist.all_reduce(t)
    return t / _CONTEXT.world


def average_sums(sums: dict, counts: list) -> tuple[dict, list]:
    """An epoch's loss sums averaged over ranks (every rank ran the same number of steps) and its counts
    (correct / labelled) summed, in one all-reduce."""
    import torch.distributed as dist
    keys = sorted(sums)
    dev = "cuda" if _CONTEXT.backend == "nccl" else "cpu"
    vec = torch.tensor([float(sums[k]) for k in keys] + [float(c) for c in counts], dtype=torch.float64, device=dev)
    dist.all_reduce(vec)
    vec = vec.cpu()
    n = len(keys)
    return ({k: vec[i] / _CONTEXT.world for i, k in enumerate(keys)}, [int(v) for v in vec[n:].tolist()])


def broadcast_buffers(model: nn.Module, average: nn.Module | None = None) -> None:
    """Rank 0's BatchNorm running statistics on every rank (the parameters agree already: the same averaged
    gradients moved them), and its whole weight average, whose float buffers each rank averaged from its own."""
    import torch.distributed as dist
    for t in [*model.buffers(), *(average.state_dict().values() if average is not None else ())]:
        dist.broadcast(t, 0)


def from_main(obj):
    """Rank 0's `obj` on every rank (a run directory's name, a checkpoint that only rank 0 reads)."""
    if _CONTEXT is None:
        return obj
    import torch.distributed as dist
    box = [obj if _CONTEXT.is_main else None]
    dist.broadcast_object_list(box, 0)
    return box[0]


def gather_objects(obj) -> list:
    """Every rank's `obj`, in rank order (all ranks take part; all get the list)."""
    import torch.distributed as dist
    out = [None] * _CONTEXT.world
    dist.all_gather_object(out, obj)
    return out
