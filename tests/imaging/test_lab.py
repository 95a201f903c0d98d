"""Lab conversions match scikit-image within the documented bounds; uint8 <-> tensor is exact."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from skimage.color import lab2rgb, rgb2lab

from service.imaging.lab import lab_to_rgb, rgb_to_lab, to_tensor, to_uint8
from tests.support.images import photo

# The bounds stated in service/imaging/lab.py's docstring: max abs difference from scikit-image.
TO_LAB_TOLERANCE = {torch.float32: 2e-4, torch.float64: 1e-9}
TO_RGB_TOLERANCE = {torch.float32: 2e-5, torch.float64: 1e-9}
DTYPES = list(TO_LAB_TOLERANCE)


def rgb_cube(step: int = 5) -> np.ndarray:
    """Every `step`-th 8-bit RGB colour, as a (N, 1, 3) image: the gamut's corners and edges."""
    levels = np.arange(0, 256, step)
    grid = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), axis=-1)
    return grid.reshape(-1, 1, 3).astype(np.uint8)


IMAGES: dict[str, Callable[[], np.ndarray]] = {
    "astronaut": lambda: photo("astronaut.png"),
    "coffee": lambda: photo("coffee.png"),
    "chelsea": lambda: photo("chelsea.png"),
    "rocket": lambda: photo("rocket.jpg"),
    "rgb-cube": rgb_cube,
}


def chw(array: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).to(dtype)


def hwc(tensor: torch.Tensor) -> np.ndarray:
    return tensor.permute(1, 2, 0).double().numpy()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", IMAGES)
def test_rgb_to_lab_matches_scikit_image(name: str, dtype: torch.dtype) -> None:
    rgb = IMAGES[name]().astype(np.float64) / 255.0
    diff = np.abs(hwc(rgb_to_lab(chw(rgb, dtype))) - rgb2lab(rgb)).max()
    assert diff <= TO_LAB_TOLERANCE[dtype]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", IMAGES)
def test_lab_to_rgb_matches_scikit_image(name: str, dtype: torch.dtype) -> None:
    lab = rgb2lab(IMAGES[name]())
    diff = np.abs(hwc(lab_to_rgb(chw(lab, dtype))) - lab2rgb(lab)).max()
    assert diff <= TO_RGB_TOLERANCE[dtype]


# Engines predict a*b* freely, so most of their output is out of gamut: clipping must match too.
@pytest.mark.filterwarnings("ignore:Conversion from CIE-LAB:UserWarning")
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_out_of_gamut_lab_is_clipped_like_scikit_image(dtype: torch.dtype) -> None:
    rng = np.random.default_rng(7)
    lab = np.stack(
        [
            rng.uniform(0, 100, (64, 64)),
            rng.uniform(-128, 127, (64, 64)),
            rng.uniform(-128, 127, (64, 64)),
        ],
        axis=-1,
    )
    reference = lab2rgb(lab)
    assert (reference == 0).any() and (reference == 1).any()  # the sample does leave the gamut
    assert np.abs(hwc(lab_to_rgb(chw(lab, dtype))) - reference).max() <= TO_RGB_TOLERANCE[dtype]


def test_batches_convert_like_single_images(cpu: torch.device) -> None:
    batch = torch.stack(
        [to_tensor(photo(n)[:64, :96], cpu) for n in ("astronaut.png", "coffee.png")]
    )
    lab = rgb_to_lab(batch)
    assert lab.shape == (2, 3, 64, 96)
    assert torch.equal(lab[1], rgb_to_lab(batch[1]))
    assert torch.equal(lab_to_rgb(lab)[0], lab_to_rgb(lab[0]))


def test_round_trip_through_lab_is_lossless_at_8_bits(cpu: torch.device) -> None:
    rgb = rgb_cube(step=5)
    assert np.array_equal(to_uint8(lab_to_rgb(rgb_to_lab(to_tensor(rgb, cpu)))), rgb)


def test_to_tensor_is_contiguous_chw_float_in_unit_range(cpu: torch.device) -> None:
    rgb = photo("coffee.png")
    tensor = to_tensor(rgb, cpu)
    assert tensor.shape == (3, 400, 600) and tensor.dtype == torch.float32
    assert tensor.is_contiguous() and tensor.device == cpu
    assert tensor.min() >= 0.0 and tensor.max() <= 1.0
    assert tensor[:, 17, 42].tolist() == pytest.approx((rgb[17, 42] / 255.0).tolist(), abs=1e-7)


def test_to_tensor_takes_read_only_and_strided_arrays(cpu: torch.device) -> None:
    rgb = photo("astronaut.png")[::2, ::-1]
    rgb.flags.writeable = False
    assert np.array_equal(to_uint8(to_tensor(rgb, cpu)), rgb)  # and no "not writable" warning


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0.0, 0),
        (0.49 / 255, 0),
        (0.51 / 255, 1),
        (127.4 / 255, 127),
        (127.6 / 255, 128),
        (254.6 / 255, 255),
        (1.0, 255),
        (1.5, 255),
        (-0.2, 0),
        (float("nan"), 0),
        (float("inf"), 255),
    ],
)
def test_to_uint8_rounds_to_nearest_and_clips(value: float, expected: int) -> None:
    tensor = torch.full((3, 2, 2), value)
    out = to_uint8(tensor)
    assert out.shape == (2, 2, 3) and out.dtype == np.uint8 and out.flags.c_contiguous
    assert (out == expected).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64], ids=str)
def test_uint8_round_trip_is_exact(dtype: torch.dtype, cpu: torch.device) -> None:
    every_level = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, axis=2)
    rgb = np.concatenate([every_level, photo("chelsea.png")[:16, :16]], axis=1)
    assert np.array_equal(to_uint8(to_tensor(rgb, cpu).to(dtype)), rgb)


@pytest.mark.parametrize(
    "bad",
    [np.zeros((4, 4), np.uint8), np.zeros((4, 4, 4), np.uint8), np.zeros((4, 4, 3), np.float32)],
    ids=["gray-2d", "rgba", "float"],
)
def test_to_tensor_refuses_non_rgb_uint8(bad: np.ndarray, cpu: torch.device) -> None:
    with pytest.raises(ValueError, match=r"RGB uint8 \(H, W, 3\)"):
        to_tensor(bad, cpu)


@pytest.mark.parametrize("shape", [(4, 4, 3), (1, 3, 4, 4), (4, 4)], ids=str)
def test_to_uint8_refuses_other_shapes(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        to_uint8(torch.zeros(shape))


@pytest.mark.gpu
def test_cuda_matches_cpu() -> None:
    cuda = torch.device("cuda")
    rgb = photo("astronaut.png")
    on_gpu = to_tensor(rgb, cuda)
    assert on_gpu.device.type == "cuda"
    lab = rgb_to_lab(on_gpu)
    cpu_lab = rgb_to_lab(to_tensor(rgb, torch.device("cpu")))
    assert (lab.cpu() - cpu_lab).abs().max() <= TO_LAB_TOLERANCE[torch.float32]
    assert np.array_equal(to_uint8(lab_to_rgb(lab)), rgb)
