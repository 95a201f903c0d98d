"""DDColor checkpoints load only when they fit; every misfit is named in the error."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from devkit.ddcolor_checkpoints import load_network
from service.engines.ddcolor.checkpoint import (
    HEAD_CLS_KEYS,
    CheckpointCorrupt,
    CheckpointMismatch,
    load_checkpoint,
)

State = dict[str, torch.Tensor]


@pytest.fixture(scope="module")
def published(ddcolor_tiny_checkpoint: Path) -> State:
    """The generated file's state dict, classifier head included."""
    state: State = torch.load(ddcolor_tiny_checkpoint, map_location="cpu", weights_only=True)[
        "params"
    ]
    return state


def write(path: Path, state: State, wrapped: bool = True) -> Path:
    torch.save({"params": state} if wrapped else state, path)
    return path


def test_published_layout_loads_without_the_head(ddcolor_tiny_checkpoint: Path) -> None:
    state = load_checkpoint(ddcolor_tiny_checkpoint, "tiny")
    assert not set(HEAD_CLS_KEYS) & set(state)
    network = load_network(ddcolor_tiny_checkpoint, "tiny")
    assert not network.training


def test_bare_state_dict_and_file_without_head_load(published: State, tmp_path: Path) -> None:
    bare = write(tmp_path / "bare.pth", published, wrapped=False)
    assert len(load_checkpoint(bare, "tiny")) == 440
    headless = {k: v for k, v in published.items() if k not in HEAD_CLS_KEYS}
    assert len(load_checkpoint(write(tmp_path / "headless.pth", headless), "tiny")) == 440


def test_constant_normalisation_buffers_may_be_absent(published: State, tmp_path: Path) -> None:
    state = {k: v for k, v in published.items() if k not in ("mean", "std")}
    loaded = load_checkpoint(write(tmp_path / "no-mean.pth", state), "tiny")
    torch.testing.assert_close(loaded["mean"].flatten(), torch.tensor([0.485, 0.456, 0.406]))


def drop(key: str) -> Callable[[State], None]:
    def change(state: State) -> None:
        del state[key]

    return change


def add(key: str) -> Callable[[State], None]:
    return lambda s: s.update({key: torch.zeros(1)})


def reshape(key: str) -> Callable[[State], None]:
    return lambda s: s.update({key: torch.zeros(3, 3)})


@pytest.mark.parametrize(
    ("change", "listed"),
    [
        (drop("refine_net.0.0.weight_u"), r"missing keys: refine_net\.0\.0\.weight_u"),
        (add("decoder.extra.weight"), r"unexpected keys: decoder\.extra\.weight"),
        (
            reshape("decoder.color_decoder.query_feat.weight"),
            r"mis-shaped keys: decoder\.color_decoder\.query_feat\.weight "
            r"\(file \(3, 3\), network \(100, 256\)\)",
        ),
        (add("encoder.arch.head.weight"), r"unexpected keys: encoder\.arch\.head\.weight"),
    ],
    ids=["missing", "unexpected", "mis-shaped", "other-head"],
)
def test_each_misfit_is_listed(
    published: State, tmp_path: Path, change: Callable[[State], None], listed: str
) -> None:
    state = dict(published)
    change(state)
    path = write(tmp_path / "bad.pth", state)
    with pytest.raises(CheckpointMismatch, match=listed) as caught:
        load_checkpoint(path, "tiny")
    assert str(path) in str(caught.value)
    assert "DDColor-tiny" in str(caught.value)


def test_wrong_variant_lists_eight_keys_then_how_many_more(
    ddcolor_tiny_checkpoint: Path,
) -> None:
    with pytest.raises(CheckpointMismatch) as caught:
        load_checkpoint(ddcolor_tiny_checkpoint, "large")
    message = str(caught.value)
    missing = re.search(r"missing keys: (.*?) \(and (\d+) more\)", message)
    assert missing is not None, message
    assert len(missing.group(1).split(", ")) == 8
    assert int(missing.group(2)) == 162 - 8  # ConvNeXt-L's 18 extra blocks, 9 keys each
    assert "mis-shaped keys" in message


@pytest.mark.parametrize(
    "content",
    [b"", b"not a checkpoint", None],
    ids=["empty", "garbage", "list"],
)
def test_unreadable_files_are_corrupt(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "bad.pth"
    if content is None:
        torch.save({"params": [torch.zeros(1)]}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(CheckpointCorrupt, match=re.escape(str(path))):
        load_checkpoint(path, "tiny")
