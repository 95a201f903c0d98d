"""DDColor's layout is the published one, and its forward keeps no state between calls."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from service.engines.ddcolor.checkpoint import HEAD_CLS_KEYS, expected_state
from service.engines.ddcolor.network import DDColor, Variant
from service.engines.ddcolor.pipeline import render_input

# Counted from piddnad/DDColor's DDColor module (ModelScope ConvNeXt, 100 queries, 3 scales,
# 9 layers): ConvNeXt-L 350 keys (ConvNeXt-T 188), pixel decoder 67, colour decoder 179,
# refine_net 4, mean and std; the published files add the two head_cls keys.
MODULE_KEYS = {"large": 602, "tiny": 440}

# A sample of the published keys and shapes, one or more from each part of the network.
LAYOUT: dict[Variant, list[tuple[str, tuple[int, ...]]]] = {
    "large": [
        ("encoder.arch.downsample_layers.0.0.weight", (192, 3, 4, 4)),
        ("encoder.arch.stages.2.26.pwconv1.weight", (3072, 768)),
        ("encoder.arch.stages.3.2.gamma", (1536,)),
        ("encoder.arch.norm3.weight", (1536,)),
        ("encoder.arch.norm.bias", (1536,)),
        ("decoder.layers.0.shuf.conv.0.weight_orig", (2048, 1536, 1, 1)),
        ("decoder.layers.0.bn.running_var", (768,)),
        ("decoder.layers.0.conv.0.weight_orig", (512, 1280, 3, 3)),
        ("decoder.layers.2.conv.2.num_batches_tracked", ()),
        ("decoder.last_shuf.conv.0.weight_v", (256,)),
        ("decoder.last_shuf.conv.0.bias", (4096,)),
        (
            "decoder.color_decoder.transformer_cross_attention_layers.8.multihead_attn.in_proj_weight",
            (768, 256),
        ),
        ("decoder.color_decoder.transformer_ffn_layers.0.linear1.weight", (2048, 256)),
        ("decoder.color_decoder.query_feat.weight", (100, 256)),
        ("decoder.color_decoder.level_embed.weight", (3, 256)),
        ("decoder.color_decoder.input_proj.2.weight", (256, 256, 1, 1)),
        ("decoder.color_decoder.color_embed.layers.2.weight", (256, 256)),
        ("refine_net.0.0.weight_orig", (2, 103, 1, 1)),
        ("refine_net.0.0.weight_u", (2,)),
        ("refine_net.0.0.weight_v", (103,)),
        ("refine_net.0.0.bias", (2,)),
        ("mean", (1, 3, 1, 1)),
    ],
    "tiny": [
        ("encoder.arch.stages.2.8.dwconv.weight", (384, 1, 7, 7)),
        ("decoder.layers.0.shuf.conv.0.weight_orig", (2048, 768, 1, 1)),
        ("decoder.layers.2.conv.0.weight_orig", (256, 352, 3, 3)),
        ("decoder.layers.2.bn.weight", (96,)),
    ],
}


@pytest.mark.parametrize("variant", ["large", "tiny"])
def test_module_has_the_published_key_count(variant: Variant) -> None:
    state = expected_state(variant)
    assert len(state) == MODULE_KEYS[variant]
    assert not set(HEAD_CLS_KEYS) & set(state)


@pytest.mark.parametrize(
    ("variant", "key", "shape"),
    [(v, k, s) for v, rows in LAYOUT.items() for k, s in rows],
    ids=[f"{v}:{k}" for v, rows in LAYOUT.items() for k, _ in rows],
)
def test_published_keys_have_published_shapes(
    variant: Variant, key: str, shape: tuple[int, ...]
) -> None:
    assert tuple(expected_state(variant)[key].shape) == shape


def test_generated_file_has_the_module_keys_plus_the_classifier_head(
    ddcolor_tiny_checkpoint: Path,
) -> None:
    state = torch.load(ddcolor_tiny_checkpoint, map_location="cpu", weights_only=True)["params"]
    assert len(state) == MODULE_KEYS["tiny"] + 2
    assert set(state) - set(expected_state("tiny")) == set(HEAD_CLS_KEYS)
    assert tuple(state["encoder.arch.head_cls.weight"].shape) == (4, 768)
    assert tuple(state["encoder.arch.head_cls.bias"].shape) == (4,)


def test_no_hooks_anywhere(ddcolor_tiny: DDColor) -> None:
    for name, module in ddcolor_tiny.named_modules():
        assert not module._forward_hooks, name
        assert not module._forward_pre_hooks, name


@pytest.fixture(scope="module")
def two_photos(astronaut: np.ndarray, coffee: np.ndarray) -> torch.Tensor:
    """Two different photos' network inputs at 64x64, as a batch of two."""
    return torch.cat([render_input(astronaut, 64), render_input(coffee, 64)])


@torch.inference_mode()
def test_batch_equals_each_image_alone(ddcolor_tiny: DDColor, two_photos: torch.Tensor) -> None:
    together = ddcolor_tiny(two_photos)
    for i in range(2):
        alone = ddcolor_tiny(two_photos[i : i + 1])
        torch.testing.assert_close(together[i : i + 1], alone, atol=1e-2, rtol=1e-3)
    # Different photos, different colours: the batch items did not collapse into one.
    assert (together[0] - together[1]).abs().mean() > 1.0


@torch.inference_mode()
def test_concurrent_calls_get_their_own_results(
    ddcolor_tiny: DDColor, two_photos: torch.Tensor
) -> None:
    expected = [ddcolor_tiny(two_photos[i : i + 1]) for i in range(2)]
    results: dict[int, list[torch.Tensor]] = {0: [], 1: []}
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def work(i: int) -> None:
        try:
            with torch.inference_mode():
                start.wait()
                for _ in range(3):
                    results[i].append(ddcolor_tiny(two_photos[i : i + 1]))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    for i in range(2):
        assert len(results[i]) == 3
        for got in results[i]:
            torch.testing.assert_close(got, expected[i], atol=1e-2, rtol=1e-3)


@pytest.mark.parametrize("size", [64, 128])
@torch.inference_mode()
def test_generated_weights_give_finite_lively_ab(
    ddcolor_tiny: DDColor, astronaut: np.ndarray, size: int
) -> None:
    ab = ddcolor_tiny(render_input(astronaut, size))
    assert ab.shape == (1, 2, size, size)
    assert torch.isfinite(ab).all()
    # Neither grey nor exploding (fresh spectral-norm vectors give |ab| ~ 1e13).
    spread = ab.std(dim=(0, 2, 3))
    assert (spread > 5).all() and (spread < 100).all(), spread
    assert ab.abs().median() < 60
    assert ab.abs().max() < 2000


@pytest.mark.parametrize("shape", [(1, 3, 48, 64), (1, 1, 64, 64), (3, 64, 64)])
def test_rejects_inputs_it_cannot_take(ddcolor_tiny: DDColor, shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError):
        ddcolor_tiny(torch.zeros(shape))


def test_unknown_variant_is_named() -> None:
    with pytest.raises(ValueError, match="'huge'"):
        DDColor("huge")  # type: ignore[arg-type]
