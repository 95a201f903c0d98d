"""Our engines give what the published pipeline gives, with the same weights.

The reference below follows richzhang/colorization's demo (`util.preprocess_img`,
`util.postprocess_tens`) with scikit-image's float64 colour conversion; only the network module
is shared with the engine (its forward is checked against the published one in test_networks).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from skimage import color

from service.engines import weights
from service.engines.networks import ECCV16Net, SIGGRAPH17Net
from tests.support.engine_outputs import AloneOutputs

MAX_MEAN_ABS_DIFF = 1.5
"""On the 0-255 scale; rounding to uint8 alone accounts for about 0.25."""


def published_pipeline(model: str, weights_dir: Path, image: np.ndarray) -> np.ndarray:
    """RGB float in 0-255, as the published demo computes it."""
    with torch.device("meta"):  # no random init: every tensor comes from the file
        network = ECCV16Net() if model == "eccv16" else SIGGRAPH17Net()
    path = weights_dir / weights.OFFICIAL[model].filename
    state = torch.load(path, map_location="cpu", weights_only=True)
    network.load_state_dict(state, strict=True, assign=True)
    network.eval()

    resized = np.asarray(
        Image.fromarray(image).resize((256, 256), resample=Image.Resampling.BICUBIC)
    )
    l_orig = torch.tensor(color.rgb2lab(image)[:, :, 0], dtype=torch.float32)[None, None]
    l_rs = torch.tensor(color.rgb2lab(resized)[:, :, 0], dtype=torch.float32)[None, None]
    with torch.no_grad():
        if model == "eccv16":
            ab = network(l_rs)
        else:
            ab = network(l_rs, torch.zeros(1, 2, 256, 256), torch.zeros(1, 1, 256, 256))
    ab = F.interpolate(ab, size=image.shape[:2], mode="bilinear", align_corners=False)
    lab = torch.cat((l_orig, ab), dim=1)[0].permute(1, 2, 0).numpy().astype(np.float64)
    with warnings.catch_warnings():
        # Predicted colours outside the sRGB gamut are clipped; scikit-image says so each time.
        warnings.filterwarnings("ignore", message=".*negative Z values", category=UserWarning)
        rgb = color.lab2rgb(lab)
    return rgb * 255.0


@pytest.mark.parametrize("model", ["eccv16", "siggraph17"])
def test_engine_matches_the_published_pipeline(
    model: str,
    weights_dir: Path,
    alone: AloneOutputs,
    coffee: np.ndarray,
    request: pytest.FixtureRequest,
) -> None:
    ours = alone(request.getfixturevalue(model), "coffee").astype(np.float64)
    theirs = published_pipeline(model, weights_dir, coffee)
    difference = np.abs(ours - theirs)
    # Guard against a blind comparison: the generated weights must give real colour.
    assert color.rgb2lab(ours / 255.0)[..., 1:].std() > 10
    assert difference.mean() < MAX_MEAN_ABS_DIFF, f"mean |difference| {difference.mean():.3f}"
