"""After the last epoch: batch-norm re-estimation, the weight average, final_model
(host_train.finish, issue 28)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from host_train import finish  # noqa: E402
from host_train.checkpoint import model_state  # noqa: E402
from host_train.data import load_digits  # noqa: E402
from host_train.train import TrainConfig, model_from_checkpoint, normalise, train  # noqa: E402

pytestmark = pytest.mark.needs_torch


@pytest.fixture(scope="module")
def digits():
    return load_digits()


def test_weight_average_is_the_exponential_moving_average():
    net = torch.nn.Linear(3, 2)
    avg = finish.WeightAverage(net, decay=0.5)
    w0 = net.weight.detach().clone()
    values = [1.0, 3.0, -2.0]
    for v in values:
        with torch.no_grad():
            net.weight.fill_(v)
        avg.update(net)
    # avg = 0.5^3 w0 + 0.5^3 * 1 + 0.5^2 * 3 + 0.5 * (-2)
    want = 0.125 * w0 + 0.125 * 1.0 + 0.25 * 3.0 + 0.5 * -2.0
    assert torch.allclose(avg.avg["weight"], want)
    copy = avg.model(net)
    assert torch.allclose(copy.weight, want) and torch.equal(net.weight, torch.full((2, 3), -2.0))


def test_config_refuses_bad_finish():
    with pytest.raises(ValueError, match="needs a weight average"):
        TrainConfig(finish="ema-bn").validate()
    with pytest.raises(ValueError, match="unknown finish"):
        TrainConfig(finish="swa").validate()
    with pytest.raises(ValueError, match="ema-decay"):
        TrainConfig(ema_decay=1.0).validate()


def test_cli_choices_are_the_finishes():
    import argparse

    from pynq_nbq.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    opt = next(a for a in sub.choices["train"]._actions if "--finish" in a.option_strings)
    assert tuple(opt.choices) == finish.FINISHES


def test_bn_reestimate_gives_the_statistics_of_clean_images(digits):
    from host_train.models import build_model

    torch.manual_seed(0)
    net = build_model("nbq-compact", len(digits.classes), digits.input_shape[0], 0.25)
    images = digits.train_x[:400]
    bn = next(m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))
    seen = []
    hook = bn.register_forward_pre_hook(lambda m, a: seen.append(a[0].detach()))
    finish.reestimate_bn(net, images, lambda xb: normalise(xb, digits.mean, digits.std))
    hook.remove()
    x = torch.cat(seen)  # the first BN's inputs: they do not depend on any BN statistic
    assert torch.allclose(bn.running_mean, x.mean(dim=(0, 2, 3)), atol=1e-5)
    assert bn.momentum is not None and not net.training


def test_finish_and_resume_are_bit_identical_and_exported(tmp_path, digits):
    cfg = dict(dataset="digits", width=0.25, epochs=3, batch_size=64, train_limit=512, seed=1,
               val_split=200, ema_decay=0.9, finish="ema-bn", bn_images=256)  # fmt: skip
    full = train(TrainConfig(**cfg), tmp_path / "full", progress=False, dataset=digits,
                 log=lambda s: None)  # fmt: skip
    train(TrainConfig(**cfg), tmp_path / "cut", progress=False, dataset=digits,
          log=lambda s: None, stop_after=2)  # fmt: skip
    resumed = train(TrainConfig(**cfg), tmp_path / "cut", resume=True, progress=False,
                    dataset=digits, log=lambda s: None)  # fmt: skip
    for k, v in full["weight_average"].items():
        assert torch.equal(v, resumed["weight_average"][k]), k
    for k, v in full["final_model"].items():
        assert torch.equal(v, resumed["final_model"][k]), k
    last = full["metrics"][-1]
    for key in ("val_acc", "val_acc_bn", "val_acc_ema_bn", "test_acc_bn", "test_acc_ema_bn"):
        assert 0.0 <= last[key] <= 1.0, key
    assert last == resumed["metrics"][-1] | {"epoch_seconds": last["epoch_seconds"]}
    # the final model is the average, not the weights as trained, and it is what loads
    conv = next(k for k in full["model"] if k.endswith("weight") and full["model"][k].ndim == 4)
    assert not torch.equal(full["final_model"][conv], full["model"][conv])
    assert torch.equal(full["final_model"][conv], full["weight_average"][conv])
    assert model_state(full) is full["final_model"]
    net, _ = model_from_checkpoint(full)
    for k, v in net.state_dict().items():
        assert torch.equal(v, full["final_model"][k]), k


def test_default_run_is_unchanged(tmp_path, digits):
    cfg = TrainConfig(dataset="digits", width=0.25, epochs=1, train_limit=128)
    ck = train(cfg, tmp_path, progress=False, dataset=digits, log=lambda s: None)
    assert "final_model" not in ck and "weight_average" not in ck
    assert "test_acc_bn" not in ck["metrics"][-1]
    assert model_state(ck) is ck["model"]
    assert np.isfinite(ck["metrics"][-1]["test_acc"])
