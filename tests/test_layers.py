"""Power-of-two layers and the converter (host_train.layers)."""

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from host_train import layers as L  # noqa: E402
from host_train import quant  # noqa: E402
from host_train.models import MODELS, build_model, count_macs  # noqa: E402


@pytest.mark.parametrize("name", MODELS)
def test_converter_leaves_no_float_conv_or_linear(name):
    model = L.convert(build_model(name, in_channels=1, width=0.25), 3)
    for mod_name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            assert isinstance(m, L.PowerOfTwoMixin), mod_name


def test_converter_copies_weights_and_mixed_precision():
    model = build_model("nbq-compact", in_channels=1, width=0.25)
    w0 = model.features[0].weight.detach().clone()
    L.convert(model, {"default": 3, "features.0": 5}, method="float")
    assert torch.equal(model.features[0].weight, w0)
    assert model.features[0].n_bits == 5 and model.features[3].n_bits == 3


def test_converter_refuses_bias():
    with pytest.raises(ValueError, match="bias"):
        L.convert(nn.Sequential(nn.Conv2d(1, 2, 3, bias=True)))


def test_a_zero_training_forward_equals_eval_forward():
    torch.manual_seed(0)
    conv = L.PowConv2d(3, 4, 3, padding=1, method="rg")
    x = torch.randn(2, 3, 5, 5)
    conv.alpha = 0.0
    conv.train()
    y_train = conv(x)
    conv.eval()
    y_eval = conv(x)
    assert torch.equal(y_train, y_eval)
    q, _ = quant.quantize(conv.weight, 3)
    assert torch.equal(y_eval, torch.nn.functional.conv2d(x, q, padding=1))


def test_eval_uses_pure_staircase_for_every_method():
    torch.manual_seed(1)
    lin = L.PowLinear(6, 3)
    x = torch.randn(4, 6)
    q, _ = quant.quantize(lin.weight, 3)
    for method in ("rg", "ste", "rtn"):
        lin.method = method
        lin.eval()
        assert torch.allclose(lin(x), x @ q.T)


def test_inq_freezes_largest_weights():
    torch.manual_seed(2)
    conv = L.PowConv2d(4, 4, 3, method="inq")
    conv.inq_freeze(0.5)
    assert int(conv.inq_mask.sum()) == conv.weight.numel() // 2
    frozen = conv.weight[conv.inq_mask > 0]
    allowed = torch.tensor(quant.level_set(3)) * 2.0 ** int(conv.inq_exp)
    assert torch.isin(frozen, allowed).all()
    conv.inq_freeze(1.0)
    assert bool((conv.inq_mask > 0).all())


def test_compact_model_fits_the_mac_budget():
    assert count_macs(build_model("nbq-compact"), (1, 28, 28)) <= 25_000_000
