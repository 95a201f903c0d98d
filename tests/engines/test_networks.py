"""The networks' layout is the published one, and their forward passes compute what it computes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from service.engines import weights
from service.engines.networks import ECCV16Net, SIGGRAPH17Net

# The published state dicts, key by key, as richzhang/colorization's modules name them: conv
# weights are (out, in, k, k), transposed-conv weights (in, out, k, k), BatchNorm has five entries.
ECCV16_LAYOUT: list[tuple[str, tuple[int, ...]]] = [
    ("model1.0.weight", (64, 1, 3, 3)),
    ("model1.0.bias", (64,)),
    ("model1.2.weight", (64, 64, 3, 3)),
    ("model1.2.bias", (64,)),
    ("model1.4.weight", (64,)),
    ("model1.4.bias", (64,)),
    ("model1.4.running_mean", (64,)),
    ("model1.4.running_var", (64,)),
    ("model1.4.num_batches_tracked", ()),
    ("model2.0.weight", (128, 64, 3, 3)),
    ("model2.0.bias", (128,)),
    ("model2.2.weight", (128, 128, 3, 3)),
    ("model2.2.bias", (128,)),
    ("model2.4.weight", (128,)),
    ("model2.4.bias", (128,)),
    ("model2.4.running_mean", (128,)),
    ("model2.4.running_var", (128,)),
    ("model2.4.num_batches_tracked", ()),
    ("model3.0.weight", (256, 128, 3, 3)),
    ("model3.0.bias", (256,)),
    ("model3.2.weight", (256, 256, 3, 3)),
    ("model3.2.bias", (256,)),
    ("model3.4.weight", (256, 256, 3, 3)),
    ("model3.4.bias", (256,)),
    ("model3.6.weight", (256,)),
    ("model3.6.bias", (256,)),
    ("model3.6.running_mean", (256,)),
    ("model3.6.running_var", (256,)),
    ("model3.6.num_batches_tracked", ()),
    ("model4.0.weight", (512, 256, 3, 3)),
    ("model4.0.bias", (512,)),
    ("model4.2.weight", (512, 512, 3, 3)),
    ("model4.2.bias", (512,)),
    ("model4.4.weight", (512, 512, 3, 3)),
    ("model4.4.bias", (512,)),
    ("model4.6.weight", (512,)),
    ("model4.6.bias", (512,)),
    ("model4.6.running_mean", (512,)),
    ("model4.6.running_var", (512,)),
    ("model4.6.num_batches_tracked", ()),
    ("model5.0.weight", (512, 512, 3, 3)),
    ("model5.0.bias", (512,)),
    ("model5.2.weight", (512, 512, 3, 3)),
    ("model5.2.bias", (512,)),
    ("model5.4.weight", (512, 512, 3, 3)),
    ("model5.4.bias", (512,)),
    ("model5.6.weight", (512,)),
    ("model5.6.bias", (512,)),
    ("model5.6.running_mean", (512,)),
    ("model5.6.running_var", (512,)),
    ("model5.6.num_batches_tracked", ()),
    ("model6.0.weight", (512, 512, 3, 3)),
    ("model6.0.bias", (512,)),
    ("model6.2.weight", (512, 512, 3, 3)),
    ("model6.2.bias", (512,)),
    ("model6.4.weight", (512, 512, 3, 3)),
    ("model6.4.bias", (512,)),
    ("model6.6.weight", (512,)),
    ("model6.6.bias", (512,)),
    ("model6.6.running_mean", (512,)),
    ("model6.6.running_var", (512,)),
    ("model6.6.num_batches_tracked", ()),
    ("model7.0.weight", (512, 512, 3, 3)),
    ("model7.0.bias", (512,)),
    ("model7.2.weight", (512, 512, 3, 3)),
    ("model7.2.bias", (512,)),
    ("model7.4.weight", (512, 512, 3, 3)),
    ("model7.4.bias", (512,)),
    ("model7.6.weight", (512,)),
    ("model7.6.bias", (512,)),
    ("model7.6.running_mean", (512,)),
    ("model7.6.running_var", (512,)),
    ("model7.6.num_batches_tracked", ()),
    ("model8.0.weight", (512, 256, 4, 4)),
    ("model8.0.bias", (256,)),
    ("model8.2.weight", (256, 256, 3, 3)),
    ("model8.2.bias", (256,)),
    ("model8.4.weight", (256, 256, 3, 3)),
    ("model8.4.bias", (256,)),
    ("model8.6.weight", (313, 256, 1, 1)),
    ("model8.6.bias", (313,)),
    ("model_out.weight", (2, 313, 1, 1)),
]

SIGGRAPH17_LAYOUT: list[tuple[str, tuple[int, ...]]] = [
    ("model1.0.weight", (64, 4, 3, 3)),
    ("model1.0.bias", (64,)),
    ("model1.2.weight", (64, 64, 3, 3)),
    ("model1.2.bias", (64,)),
    ("model1.4.weight", (64,)),
    ("model1.4.bias", (64,)),
    ("model1.4.running_mean", (64,)),
    ("model1.4.running_var", (64,)),
    ("model1.4.num_batches_tracked", ()),
    ("model2.0.weight", (128, 64, 3, 3)),
    ("model2.0.bias", (128,)),
    ("model2.2.weight", (128, 128, 3, 3)),
    ("model2.2.bias", (128,)),
    ("model2.4.weight", (128,)),
    ("model2.4.bias", (128,)),
    ("model2.4.running_mean", (128,)),
    ("model2.4.running_var", (128,)),
    ("model2.4.num_batches_tracked", ()),
    ("model3.0.weight", (256, 128, 3, 3)),
    ("model3.0.bias", (256,)),
    ("model3.2.weight", (256, 256, 3, 3)),
    ("model3.2.bias", (256,)),
    ("model3.4.weight", (256, 256, 3, 3)),
    ("model3.4.bias", (256,)),
    ("model3.6.weight", (256,)),
    ("model3.6.bias", (256,)),
    ("model3.6.running_mean", (256,)),
    ("model3.6.running_var", (256,)),
    ("model3.6.num_batches_tracked", ()),
    ("model4.0.weight", (512, 256, 3, 3)),
    ("model4.0.bias", (512,)),
    ("model4.2.weight", (512, 512, 3, 3)),
    ("model4.2.bias", (512,)),
    ("model4.4.weight", (512, 512, 3, 3)),
    ("model4.4.bias", (512,)),
    ("model4.6.weight", (512,)),
    ("model4.6.bias", (512,)),
    ("model4.6.running_mean", (512,)),
    ("model4.6.running_var", (512,)),
    ("model4.6.num_batches_tracked", ()),
    ("model5.0.weight", (512, 512, 3, 3)),
    ("model5.0.bias", (512,)),
    ("model5.2.weight", (512, 512, 3, 3)),
    ("model5.2.bias", (512,)),
    ("model5.4.weight", (512, 512, 3, 3)),
    ("model5.4.bias", (512,)),
    ("model5.6.weight", (512,)),
    ("model5.6.bias", (512,)),
    ("model5.6.running_mean", (512,)),
    ("model5.6.running_var", (512,)),
    ("model5.6.num_batches_tracked", ()),
    ("model6.0.weight", (512, 512, 3, 3)),
    ("model6.0.bias", (512,)),
    ("model6.2.weight", (512, 512, 3, 3)),
    ("model6.2.bias", (512,)),
    ("model6.4.weight", (512, 512, 3, 3)),
    ("model6.4.bias", (512,)),
    ("model6.6.weight", (512,)),
    ("model6.6.bias", (512,)),
    ("model6.6.running_mean", (512,)),
    ("model6.6.running_var", (512,)),
    ("model6.6.num_batches_tracked", ()),
    ("model7.0.weight", (512, 512, 3, 3)),
    ("model7.0.bias", (512,)),
    ("model7.2.weight", (512, 512, 3, 3)),
    ("model7.2.bias", (512,)),
    ("model7.4.weight", (512, 512, 3, 3)),
    ("model7.4.bias", (512,)),
    ("model7.6.weight", (512,)),
    ("model7.6.bias", (512,)),
    ("model7.6.running_mean", (512,)),
    ("model7.6.running_var", (512,)),
    ("model7.6.num_batches_tracked", ()),
    ("model8up.0.weight", (512, 256, 4, 4)),
    ("model8up.0.bias", (256,)),
    ("model8.1.weight", (256, 256, 3, 3)),
    ("model8.1.bias", (256,)),
    ("model8.3.weight", (256, 256, 3, 3)),
    ("model8.3.bias", (256,)),
    ("model8.5.weight", (256,)),
    ("model8.5.bias", (256,)),
    ("model8.5.running_mean", (256,)),
    ("model8.5.running_var", (256,)),
    ("model8.5.num_batches_tracked", ()),
    ("model9up.0.weight", (256, 128, 4, 4)),
    ("model9up.0.bias", (128,)),
    ("model9.1.weight", (128, 128, 3, 3)),
    ("model9.1.bias", (128,)),
    ("model9.3.weight", (128,)),
    ("model9.3.bias", (128,)),
    ("model9.3.running_mean", (128,)),
    ("model9.3.running_var", (128,)),
    ("model9.3.num_batches_tracked", ()),
    ("model10up.0.weight", (128, 128, 4, 4)),
    ("model10up.0.bias", (128,)),
    ("model10.1.weight", (128, 128, 3, 3)),
    ("model10.1.bias", (128,)),
    ("model3short8.0.weight", (256, 256, 3, 3)),
    ("model3short8.0.bias", (256,)),
    ("model2short9.0.weight", (128, 128, 3, 3)),
    ("model2short9.0.bias", (128,)),
    ("model1short10.0.weight", (128, 64, 3, 3)),
    ("model1short10.0.bias", (128,)),
    ("model_class.0.weight", (529, 256, 1, 1)),
    ("model_class.0.bias", (529,)),
    ("model_out.0.weight", (2, 128, 1, 1)),
    ("model_out.0.bias", (2,)),
]

LAYOUTS = {"eccv16": ECCV16_LAYOUT, "siggraph17": SIGGRAPH17_LAYOUT}
NETWORKS: dict[str, type[nn.Module]] = {"eccv16": ECCV16Net, "siggraph17": SIGGRAPH17Net}
BUFFERS = (".running_mean", ".running_var", ".num_batches_tracked")


def numel(shape: tuple[int, ...]) -> int:
    n = 1
    for side in shape:
        n *= side
    return n


def state_from_layout(layout: list[tuple[str, tuple[int, ...]]]) -> dict[str, torch.Tensor]:
    """A state dict with exactly the layout's keys and shapes (values arbitrary)."""
    state = {}
    for key, shape in layout:
        if key.endswith(".num_batches_tracked"):
            state[key] = torch.tensor(0, dtype=torch.long)
        else:
            state[key] = torch.randn(shape)
    return state


@pytest.mark.parametrize(
    ("model", "entries", "parameters"),
    [("eccv16", 82, 32_236_011), ("siggraph17", 107, 34_187_027)],
    ids=["eccv16", "siggraph17"],
)
def test_layout_has_the_published_counts(model: str, entries: int, parameters: int) -> None:
    layout = LAYOUTS[model]
    assert len(layout) == entries
    assert len({key for key, _ in layout}) == entries
    assert sum(numel(s) for k, s in layout if not k.endswith(BUFFERS)) == parameters


@pytest.mark.parametrize("model", ["eccv16", "siggraph17"])
def test_layout_accounts_for_the_published_file_size(model: str) -> None:
    # float32 tensors plus int64 counters must fill the published file, leaving only the
    # pickle's few kilobytes of keys and headers.
    layout = LAYOUTS[model]
    tensor_bytes = sum(
        8 if key.endswith(".num_batches_tracked") else 4 * numel(shape) for key, shape in layout
    )
    overhead = weights.OFFICIAL[model].size - tensor_bytes
    assert 0 < overhead < 32 * 1024


@pytest.mark.parametrize("model", ["eccv16", "siggraph17"])
def test_published_layout_loads_strictly(model: str) -> None:
    network = NETWORKS[model]()
    network.load_state_dict(state_from_layout(LAYOUTS[model]), strict=True)
    listed = [(key, tuple(value.shape)) for key, value in network.state_dict().items()]
    assert listed == LAYOUTS[model]


def published_eccv16_forward(net: ECCV16Net, lightness: torch.Tensor) -> torch.Tensor:
    """The forward of richzhang/colorization's ECCVGenerator, step by step."""
    x = (lightness - 50.0) / 100.0
    for stage in (net.model1, net.model2, net.model3, net.model4):
        x = stage(x)
    for stage in (net.model5, net.model6, net.model7, net.model8):
        x = stage(x)
    out_reg = net.model_out(nn.Softmax(dim=1)(x))
    return nn.Upsample(scale_factor=4, mode="bilinear")(out_reg) * 110.0


def published_siggraph17_forward(
    net: SIGGRAPH17Net, lightness: torch.Tensor, ab: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """The forward of richzhang/colorization's SIGGRAPHGenerator, duplicated last stage included."""
    conv1_2 = net.model1(torch.cat(((lightness - 50.0) / 100.0, ab / 110.0, mask), dim=1))
    conv2_2 = net.model2(conv1_2[:, :, ::2, ::2])
    conv3_3 = net.model3(conv2_2[:, :, ::2, ::2])
    conv4_3 = net.model4(conv3_3[:, :, ::2, ::2])
    conv7_3 = net.model7(net.model6(net.model5(conv4_3)))
    conv8_3 = net.model8(net.model8up(conv7_3) + net.model3short8(conv3_3))
    out_reg = torch.empty(0)
    for _ in range(2):
        conv9_3 = net.model9(net.model9up(conv8_3) + net.model2short9(conv2_2))
        conv10_2 = net.model10(net.model10up(conv9_3) + net.model1short10(conv1_2))
        out_reg = net.model_out(conv10_2)
    return out_reg * 110.0


def loaded(model: str, weights_dir: Path) -> nn.Module:
    with torch.device("meta"):
        network = NETWORKS[model]()
    network.load_state_dict(weights.load_state_dict(model, weights_dir), strict=True, assign=True)
    return network.eval()


def test_eccv16_forward_is_the_published_one(weights_dir: Path) -> None:
    net = loaded("eccv16", weights_dir)
    assert isinstance(net, ECCV16Net)
    lightness = torch.rand(2, 1, 32, 32) * 100
    with torch.inference_mode():
        ours = net(lightness)
        published = published_eccv16_forward(net, lightness)
    assert ours.shape == (2, 2, 32, 32)
    assert torch.equal(ours, published)
    assert ours.std() > 5.0, "generated weights should give varied colours"


def test_siggraph17_forward_is_the_published_one(weights_dir: Path) -> None:
    net = loaded("siggraph17", weights_dir)
    assert isinstance(net, SIGGRAPH17Net)
    lightness = torch.rand(2, 1, 32, 32) * 100
    ab = torch.zeros(2, 2, 32, 32)
    mask = torch.zeros(2, 1, 32, 32)
    ab[:, :, 10:13, 20:23] = torch.tensor([60.0, -40.0]).view(2, 1, 1)
    mask[:, :, 10:13, 20:23] = 1.0
    with torch.inference_mode():
        ours = net(lightness, ab, mask)
        published = published_siggraph17_forward(net, lightness, ab, mask)
    assert ours.shape == (2, 2, 32, 32)
    assert torch.equal(ours, published)
    assert ours.abs().max() <= 110.0
    assert ours.std() > 5.0, "generated weights should give varied colours"


@pytest.fixture(scope="module")
def untrained() -> dict[str, nn.Module]:
    """One default-initialised network per model; tests remove the hooks they add."""
    return {model: cls().eval() for model, cls in NETWORKS.items()}


def test_siggraph17_runs_each_stage_once_and_skips_the_class_head(
    untrained: dict[str, nn.Module],
) -> None:
    net = untrained["siggraph17"]
    calls: dict[str, int] = {}
    handles = []
    for name, child in net.named_children():
        calls[name] = 0
        handles.append(child.register_forward_hook(counter(calls, name)))
    try:
        with torch.inference_mode():
            net(
                torch.rand(1, 1, 32, 32) * 100, torch.zeros(1, 2, 32, 32), torch.zeros(1, 1, 32, 32)
            )
    finally:
        for handle in handles:
            handle.remove()
    assert calls.pop("model_class") == 0
    assert calls == dict.fromkeys(calls, 1)


def counter(calls: dict[str, int], name: str) -> Callable[..., None]:
    def hook(*_: object) -> None:
        calls[name] += 1

    return hook


@pytest.mark.parametrize(
    ("model", "inputs", "first_layer_input"),
    [
        ("eccv16", (0.0,), (-0.5,)),
        ("eccv16", (100.0,), (0.5,)),
        ("siggraph17", (50.0, 55.0, -110.0, 1.0), (0.0, 0.5, -1.0, 1.0)),
        ("siggraph17", (100.0, 0.0, 22.0, 0.0), (0.5, 0.0, 0.2, 0.0)),
    ],
    ids=["eccv16-black", "eccv16-white", "siggraph17-hint", "siggraph17-no-hint"],
)
def test_inputs_are_normalised_as_published(
    untrained: dict[str, nn.Module],
    model: str,
    inputs: tuple[float, ...],
    first_layer_input: tuple[float, ...],
) -> None:
    # L -> (L - 50) / 100, ab -> ab / 110, mask unchanged.
    net = untrained[model]
    seen: list[torch.Tensor] = []
    first = net.get_submodule("model1")
    handle = first.register_forward_pre_hook(lambda _m, args: seen.append(args[0].clone()))
    planes = [torch.full((1, 1, 16, 16), value) for value in inputs]
    try:
        with torch.inference_mode():
            if model == "eccv16":
                net(planes[0])
            else:
                net(planes[0], torch.cat(planes[1:3], dim=1), planes[3])
    finally:
        handle.remove()
    expected = torch.tensor(first_layer_input).view(1, -1, 1, 1).expand_as(seen[0])
    torch.testing.assert_close(seen[0], expected)


def test_eccv16_output_is_the_expectation_over_bins_scaled_by_110() -> None:
    # With every bin centre at a = 0.25, b = -0.5 the softmax weights sum to one everywhere.
    net = ECCV16Net().eval()
    with torch.no_grad():
        net.model_out.weight[0].fill_(0.25)
        net.model_out.weight[1].fill_(-0.5)
        ab = net(torch.rand(1, 1, 32, 32) * 100)
    torch.testing.assert_close(ab[0, 0], torch.full((32, 32), 27.5))
    torch.testing.assert_close(ab[0, 1], torch.full((32, 32), -55.0))
