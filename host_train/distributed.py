"""Multi-process training on torch's own engine: ``torch.distributed`` + DDP.

Launch with torch's launcher (one process per core group or GPU)::

    torchrun --standalone --nproc_per_node=2 -m host_train --out runs/rg3 ...
    nbq train --nproc 2 --out runs/rg3 ...        # the same: it launches torchrun

:func:`from_env` joins the process group that torchrun describes (``WORLD_SIZE``,
``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``); without it (or with one
process) everything here is a no-op and training runs exactly as before.

How a run is split (``host_train.train`` calls these hooks):

* **Data.** Every rank draws the same (seed, epoch)-seeded permutation and the same
  augmentation parameters for each *global* batch of ``batch_size`` images, then takes
  its contiguous share (:func:`shard`).  The images a step sees, their crops and flips
  are those of the single-process run; ``batch_size`` is the global batch.
* **Gradients.** :func:`wrap` puts the model in ``DistributedDataParallel``, which
  averages gradients over ranks; :func:`loss_weight` scales each rank's mean loss by
  ``world * local / global`` so that the average is the mean over the global batch even
  when the shares differ by one image.  A model without batch norm therefore takes the
  single-process step on the concatenated batch (equal up to float32 summation order;
  ``tests/test_distributed.py``).
* **Batch norm.** On GPUs (NCCL) the model's batch norms become ``SyncBatchNorm``: the
  statistics of the global batch, as in one process.  ``SyncBatchNorm`` does not run on
  CPU (gloo), so the **CPU path normalises each rank's share with its own batch
  statistics** (a smaller batch than one process would use) and, after every step,
  :func:`average_bn_stats` replaces every rank's running mean/variance by their average
  over ranks, so all ranks hold the same running statistics (tested: equal to the
  average of the per-share updates).  A BN network's CPU DDP step is therefore close to,
  not equal to, the single-process step.
* **Side effects** - checkpoints, ``metrics.json``, curves, log lines, the progress bar
  and the test-set evaluation - happen on rank 0 only (:attr:`Dist.is_main`); every rank
  reads the checkpoint on ``--resume``, so a resumed run continues bit-identically.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class Dist:
    """Where this process stands: rank, number of processes, backend (None: single)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def active(self) -> bool:
        """True when more than one process trains together."""
        return self.world > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 writes checkpoints, metrics and logs."""
        return self.rank == 0

    @property
    def device(self) -> torch.device:
        """cuda:LOCAL_RANK under NCCL, else the CPU."""
        if self.backend == "nccl":
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")


def backend_for_machine() -> str:
    """NCCL when CUDA GPUs are present, else gloo (CPU)."""
    return "nccl" if torch.cuda.is_available() else "gloo"


def from_env() -> Dist:
    """This process's :class:`Dist`: the already initialised process group, or the one
    torchrun's environment describes (initialised here), or a single process."""
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if dist.is_available() and dist.is_initialized():
        return Dist(dist.get_rank(), dist.get_world_size(), local, dist.get_backend())
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    backend = backend_for_machine()
    if backend == "nccl":
        torch.cuda.set_device(local)
    dist.init_process_group(backend)
    return Dist(dist.get_rank(), dist.get_world_size(), local, backend)


def shard(n: int, d: Dist) -> slice:
    """This rank's contiguous share of a global batch of ``n`` items (sizes differ by
    at most one; the first ``n % world`` ranks get the extra item)."""
    base, extra = divmod(n, d.world)
    start = d.rank * base + min(d.rank, extra)
    return slice(start, start + base + (1 if d.rank < extra else 0))


def loss_weight(n_local: int, n_global: int, d: Dist) -> float:
    """Factor on this rank's mean loss so that DDP's gradient average equals the
    gradient of the mean loss over the global batch (1.0 for equal shares)."""
    return n_local * d.world / n_global


def wrap(model: nn.Module, d: Dist) -> nn.Module:
    """The module to train: ``model`` itself in one process, else DDP around it
    (``SyncBatchNorm`` under NCCL; under gloo, buffers are averaged by
    :func:`average_bn_stats` instead of broadcast from rank 0)."""
    if not d.active:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    model = sync_batch_norms(model, d)
    if d.backend == "nccl":
        return DDP(model, device_ids=[d.local_rank])
    return DDP(model, broadcast_buffers=False)


def sync_batch_norms(model: nn.Module, d: Dist) -> nn.Module:
    """``model`` with ``SyncBatchNorm`` in place of its batch norms under NCCL (global
    batch statistics); unchanged under gloo (CPU), where :func:`average_bn_stats` keeps
    the ranks' running statistics equal instead."""
    if d.active and d.backend == "nccl":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model


def unwrap(net: nn.Module) -> nn.Module:
    """The model inside a DDP wrapper (or ``net`` itself)."""
    return net.module if hasattr(net, "module") else net


def _batch_norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def average_bn_stats(model: nn.Module, d: Dist) -> None:
    """Average every batch norm's running mean and variance over the ranks (gloo/CPU
    path; a no-op in one process and for ``SyncBatchNorm``, whose statistics are global
    already)."""
    if not d.active or d.backend == "nccl":
        return
    for bn in _batch_norms(model):
        if bn.running_mean is None:
            continue
        for buf in (bn.running_mean, bn.running_var):
            dist.all_reduce(buf, op=dist.ReduceOp.SUM)
            buf.div_(d.world)


def all_sum(values: list[float], d: Dist) -> list[float]:
    """Element-wise sum of ``values`` over the ranks (float64), e.g. loss totals."""
    if not d.active:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=d.device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def barrier(d: Dist) -> None:
    """Wait for every rank (no-op in one process)."""
    if d.active:
        dist.barrier()


def shutdown() -> None:
    """Leave the process group cleanly: wait for every rank, then destroy the group.

    A rank that destroys its gloo group (or exits) while a peer is still working can
    make the peer's gloo threads abort ("terminate called without an active
    exception"); the barrier first makes every rank reach this point.  No-op when no
    group is initialised (one process, or already left)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
