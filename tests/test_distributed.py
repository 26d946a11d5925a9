"""Multi-process training (host_train.distributed): 2 CPU processes on gloo.

One module fixture spawns two processes that join a gloo process group through a
file, take DDP steps and train on digits, and save what they hold; the tests compare
in the parent process.
"""

from __future__ import annotations

import copy
import json

import pytest

torch = pytest.importorskip("torch")
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402
from torch import nn  # noqa: E402

from host_train import distributed  # noqa: E402
from host_train import layers as L  # noqa: E402
from host_train.train import TrainConfig, batch_loss, load_checkpoint  # noqa: E402

WORLD = 2
BATCH = 11  # odd: the two shares differ by one image, so the loss weights matter


def _join(rank: int, tmp: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp}/rendezvous", rank=rank, world_size=WORLD
    )


def _bn_free_model() -> nn.Module:
    torch.manual_seed(0)
    m = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, bias=False),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 6 * 6, 5, bias=False),
    )
    return L.convert(m, 3, "nearest", "rg")  # the quantized forward runs on every rank


def _bn_model() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, bias=False), nn.BatchNorm2d(3), nn.Flatten(), nn.Linear(48, 5)
    )


def _data():
    g = torch.Generator().manual_seed(2)
    return torch.randn(BATCH, 1, 6, 6, generator=g), torch.randint(0, 5, (BATCH,), generator=g)


def _steps(net, model, x, y, d, n_steps=3):
    """SGD steps on this rank's share of (x, y); the parameters after each step."""
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    part = distributed.shard(len(x), d)
    after = []
    for _ in range(n_steps):
        loss = batch_loss(TrainConfig(), net(x[part]), y[part])
        opt.zero_grad()
        (loss * distributed.loss_weight(len(y[part]), len(y), d)).backward()
        opt.step()
        distributed.average_bn_stats(model, d)
        after.append({k: v.detach().clone() for k, v in model.state_dict().items()})
    return after


def _worker(rank: int, tmp: str) -> None:
    """One rank: a few DDP steps on a BN-free and a BN model, then train() on digits
    (2 epochs straight; 1 epoch, stop, resume)."""
    from host_train.data import load_digits
    from host_train.train import train

    _join(rank, tmp)
    d = distributed.from_env()
    assert (d.rank, d.world, d.backend) == (rank, WORLD, "gloo")
    x, y = _data()
    model = _bn_free_model()
    bn_free = _steps(distributed.wrap(model, d), model, x, y, d)
    model = _bn_model()
    with_bn = _steps(distributed.wrap(model, d), model, x, y, d, n_steps=1)

    cfg = TrainConfig(
        dataset="digits", width=0.25, epochs=2, batch_size=64, train_limit=150, seed=5
    )
    per_step = []

    def record(model, step):
        per_step.append(torch.cat([t.flatten().double() for t in model.state_dict().values()]))

    logs = []
    kw = dict(progress=False, dataset=load_digits(), log=logs.append)
    full = train(cfg, f"{tmp}/full", on_step=record, **kw)
    train(cfg, f"{tmp}/cut", stop_after=1, **kw)
    resumed = train(cfg, f"{tmp}/cut", resume=True, **kw)
    saved = {"bn_free": bn_free, "bn": with_bn, "steps": per_step, "logs": logs}
    saved.update(full=full["model"], resumed=resumed["model"])
    torch.save(saved, f"{tmp}/rank-{rank}.pt")
    distributed.shutdown()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """(tmp dir, what each of the WORLD processes saved)."""
    tmp = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(str(tmp),), nprocs=WORLD, join=True)
    return tmp, [torch.load(tmp / f"rank-{r}.pt") for r in range(WORLD)]


def test_ranks_hold_identical_parameters_after_each_step(ranks):
    _, (r0, r1) = ranks
    for name in ("bn_free", "bn"):
        for s0, s1 in zip(r0[name], r1[name], strict=True):
            for k in s0:
                assert torch.equal(s0[k], s1[k]), (name, k)


def test_bn_free_ddp_step_equals_one_process_on_the_whole_batch(ranks):
    x, y = _data()
    model = _bn_free_model()
    single = _steps(model, model, x, y, distributed.Dist())
    for got, want in zip(ranks[1][0]["bn_free"], single, strict=True):
        for k in want:
            # the same maths; only float32 summation order differs
            torch.testing.assert_close(got[k], want[k], rtol=1e-5, atol=1e-6)
    assert not torch.equal(single[0]["0.weight"], _bn_free_model().state_dict()["0.weight"])


def test_cpu_bn_statistics_are_the_average_of_the_shares(ranks):
    """gloo has no SyncBatchNorm: each rank normalises its share with its own batch
    statistics and the running statistics are averaged over the ranks."""
    x, _ = _data()
    want = {}
    for rank in range(WORLD):
        m = _bn_model().train()
        with torch.no_grad():
            m(x[distributed.shard(len(x), distributed.Dist(rank=rank, world=WORLD))])
        for k in ("1.running_mean", "1.running_var"):
            want[k] = want.get(k, 0) + m.state_dict()[k] / WORLD
    got = ranks[1][0]["bn"][0]
    for k, v in want.items():
        torch.testing.assert_close(got[k], v, rtol=1e-6, atol=1e-7)
    one = _bn_model().train()
    with torch.no_grad():
        one(x)  # one process on the whole batch: close, not equal (between-share variance)
    assert not torch.equal(got["1.running_var"], one.state_dict()["1.running_var"])


def test_ddp_training_keeps_ranks_identical_and_resumes_bit_identically(ranks):
    tmp, (r0, r1) = ranks
    assert len(r0["steps"]) == 2 * 3  # 150 images, global batch 64: 3 steps per epoch
    for a, b in zip(r0["steps"], r1["steps"], strict=True):
        assert torch.equal(a, b)
    for r in (r0, r1):
        for k, v in r["full"].items():
            assert torch.equal(v, r["resumed"][k]), k
    assert torch.equal(
        r0["steps"][-1], torch.cat([v.flatten().double() for v in r0["full"].values()])
    )


def test_ddp_side_effects_on_rank_0_only(ranks):
    tmp, (r0, r1) = ranks
    assert r1["logs"] == [] and len(r0["logs"]) == 2 + 1 + 2  # epochs, resume line, epochs
    metrics = json.loads((tmp / "full" / "metrics.json").read_text())
    assert [m["processes"] for m in metrics] == [WORLD, WORLD]
    ck = load_checkpoint(tmp / "cut")
    assert ck["epoch"] == 2 and ck["config"]["flip"] is False  # digits: no flips


def test_shards_cover_the_batch_once():
    for n in range(0, 9):
        for world in (1, 2, 3):
            parts = [
                distributed.shard(n, distributed.Dist(rank=r, world=world)) for r in range(world)
            ]
            idx = [i for p in parts for i in range(n)[p]]
            assert idx == list(range(n))
            sizes = [p.stop - p.start for p in parts]
            assert max(sizes) - min(sizes) <= 1
            w = [distributed.loss_weight(s, n, distributed.Dist(world=world)) for s in sizes if n]
            assert sum(w) == pytest.approx(world if n else 0)


def test_single_process_hooks_do_nothing():
    d = distributed.Dist()
    m = _bn_model()
    before = copy.deepcopy(m.state_dict())
    assert distributed.wrap(m, d) is m
    distributed.average_bn_stats(m, d)
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    assert distributed.all_sum([1.0, 2.0], d) == [1.0, 2.0]
    assert distributed.shard(5, d) == slice(0, 5)


def test_batch_norms_become_sync_batch_norms_under_nccl_only():
    nccl = distributed.Dist(rank=0, world=2, backend="nccl")
    synced = distributed.sync_batch_norms(_bn_model(), nccl)
    assert isinstance(synced[1], nn.SyncBatchNorm)
    for d in (distributed.Dist(world=2, backend="gloo"), distributed.Dist()):
        assert type(distributed.sync_batch_norms(_bn_model(), d)[1]) is nn.BatchNorm2d
