"""decode_image: every bad input gets its exact error; every awkward one decodes upright to RGB."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile
from skimage.color import rgb2lab

from service.api.outcomes import answer
from service.imaging import decode as decode_module
from service.imaging.decode import (
    GRAYSCALE_CHROMA,
    chroma_level,
    decode_image,
    identify_format,
    probe_header,
    probe_size,
)
from service.imaging.encode import encode_image
from service.imaging.errors import (
    ImageError,
    ImageTooLarge,
    UndecodableImage,
    UnsupportedFormat,
)
from service.settings import INPUT_FORMATS
from tests.support.bad_inputs import (
    BAD_INPUTS,
    Case,
    cases,
    halves,
    minimal_gif,
    one_bit_png,
    photo_crop,
    png_with_size,
    quadrants,
    save,
)
from tests.support.images import DATA_DIR, photo

# Big enough for every accepted case (camera.png is 512x512), small enough that the genuine
# over-the-limit PNG would decode in a blink if the pixel check were missing.
LIMIT = 300_000
TABLE = [c for c in cases(max_pixels=LIMIT) if not c.http_only]
REFUSED = [c for c in TABLE if c.status != 200]
ACCEPTED = [c for c in TABLE if c.status == 200]
ERRORS: dict[int, type[ImageError]] = {  # the client's status, through the outcome table
    413: ImageTooLarge,
    415: UnsupportedFormat,
    422: UndecodableImage,
}


def case_id(case: Case) -> str:
    return case.id


def decode(
    data: bytes, max_pixels: int = LIMIT, allowed: tuple[str, ...] = INPUT_FORMATS
) -> np.ndarray:
    return decode_image(data, allowed_formats=allowed, max_pixels=max_pixels)


def pillow_rgb(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.array(im.convert("RGB"))


# --- the shared table ------------------------------------------------------------------------


@pytest.mark.parametrize("case", REFUSED, ids=case_id)
def test_refused_with_exact_error_and_status(case: Case) -> None:
    with pytest.raises(ImageError) as caught:
        decode(case.data)
    assert type(caught.value) is ERRORS[case.status]
    assert answer(caught.value.outcome).status == case.status
    assert str(caught.value) == caught.value.message != ""


@pytest.mark.parametrize("case", REFUSED, ids=case_id)
def test_the_header_probe_refuses_alike_or_leaves_it_to_decoding(case: Case) -> None:
    """What the upload's header check refuses, it refuses as decoding would; the rest (broken
    pixel data behind a sound header) is found by the prepare stage's decode."""
    try:
        probe_header(case.data, allowed_formats=INPUT_FORMATS, max_pixels=LIMIT)
    except ImageError as exc:
        assert type(exc) is ERRORS[case.status]
    else:
        assert case.status == 422, "only undecodable pixel data may pass the header check"


@pytest.mark.parametrize("case", ACCEPTED, ids=case_id)
def test_the_header_probe_predicts_the_decoded_shape(case: Case) -> None:
    header = probe_header(case.data, allowed_formats=INPUT_FORMATS, max_pixels=LIMIT)
    rgb = decode(case.data)
    assert (header.height, header.width) == rgb.shape[:2]


@pytest.mark.parametrize("case", ACCEPTED, ids=case_id)
def test_accepted_decodes_to_upright_contiguous_rgb(case: Case) -> None:
    rgb = decode(case.data)
    assert rgb.dtype == np.uint8
    assert rgb.ndim == 3 and rgb.shape[2] == 3
    assert rgb.flags.c_contiguous and rgb.flags.writeable
    assert (rgb.shape[1], rgb.shape[0]) == case.size
    if case.check is not None:
        case.check(rgb)


@pytest.mark.parametrize("case", [c for c in ACCEPTED if c.check], ids=case_id)
def test_table_checks_can_fail(case: Case) -> None:
    """Each pixel check rejects the negative of the right answer, so it is not vacuous."""
    assert case.check is not None
    with pytest.raises(AssertionError):
        case.check(255 - decode(case.data))


def test_default_table_covers_every_status() -> None:
    assert {c.status for c in BAD_INPUTS} == {200, 413, 415, 422}
    assert len({c.id for c in BAD_INPUTS}) == len(BAD_INPUTS)
    assert not any(c.http_only for c in BAD_INPUTS)
    over = cases(max_upload_bytes=1 << 20)[-1]
    assert (over.id, over.status, over.http_only, len(over.data)) == (
        "body-over-byte-limit",
        413,
        True,
        (1 << 20) + 1,
    )


# --- refusing big images before decoding ----------------------------------------------------

ANY_413 = [c for c in BAD_INPUTS if c.status == 413]
# A GIF frame can outgrow the logical screen the header declares; only Pillow's parse shows it.
NEEDS_PILLOW_HEADER = {"gif-frame-outgrows-screen"}


def _refuse(*_: object, **__: object) -> None:
    raise AssertionError("pixels were decoded (or Pillow was called) for an oversized image")


@pytest.mark.parametrize("case", ANY_413, ids=case_id)
def test_too_large_is_refused_quickly_without_decoding_pixels(
    case: Case, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At the default 40-megapixel limit, from the header alone: no pixel buffer is allocated."""
    monkeypatch.setattr(ImageFile.ImageFile, "load", _refuse)
    if case.id not in NEEDS_PILLOW_HEADER:
        monkeypatch.setattr(Image, "open", _refuse)
    started = time.perf_counter()
    with pytest.raises(ImageTooLarge) as caught:
        decode(case.data, max_pixels=40_000_000)
    assert time.perf_counter() - started < 0.5
    assert caught.value.width * caught.value.height > 40_000_000


@pytest.mark.parametrize(
    ("width", "height", "max_pixels", "refused"),
    [
        (100, 100, 10_000, False),
        (100, 100, 9_999, True),
        (1, 10_000, 10_000, False),
        (10_001, 1, 10_000, True),
    ],
    ids=["at-limit", "one-over", "strip-at-limit", "strip-one-over"],
)
def test_pixel_limit_is_width_times_height(
    width: int, height: int, max_pixels: int, refused: bool
) -> None:
    data = one_bit_png(width, height)
    if not refused:
        assert decode(data, max_pixels=max_pixels).shape == (height, width, 3)
        return
    with pytest.raises(ImageTooLarge) as caught:
        decode(data, max_pixels=max_pixels)
    assert str(caught.value) == (
        f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels} pixels"
    )


def test_pillows_own_bomb_limit_is_a_413_too() -> None:
    """With max_pixels above Pillow's limit, Pillow refuses first; the client still gets 413."""
    data = png_with_size(save(photo_crop(), "PNG"), 100_000, 100_000)
    with pytest.raises(ImageTooLarge) as caught:
        decode(data, max_pixels=10**12)
    assert caught.value.max_pixels == 2 * (Image.MAX_IMAGE_PIXELS or 0)


def test_truncated_images_stay_errors_globally() -> None:
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


# --- format identification: 415 versus 422 ---------------------------------------------------


@pytest.mark.parametrize(
    ("case_name", "detected"),
    [
        ("svg-as-jpg", "SVG"),
        ("html-as-jpg", "HTML"),
        ("pdf-as-jpg", "PDF"),
        ("tiff", "TIFF"),
        ("tiff-as-jpg", "TIFF"),
        ("random-bytes", None),
        ("plain-text", None),
    ],
)
def test_415_names_what_was_sent_and_lists_allowed_formats(
    case_name: str, detected: str | None
) -> None:
    case = next(c for c in TABLE if c.id == case_name)
    with pytest.raises(UnsupportedFormat) as caught:
        decode(case.data)
    assert caught.value.detected == detected
    assert caught.value.allowed == INPUT_FORMATS
    assert str(caught.value).endswith("; allowed formats: JPEG, PNG, WEBP, BMP, GIF")
    assert (detected or "unrecognised file content") in str(caught.value)


@pytest.mark.parametrize(
    ("data", "allowed", "error", "fmt"),
    [
        (b"\xff\xd8\xff", ("JPEG",), UndecodableImage, "JPEG"),
        (b"\xff\xd8", ("JPEG",), UndecodableImage, "JPEG"),
        (b"\xff\xd8", ("PNG",), UnsupportedFormat, None),
        (b"RIFF\x00\x00\x00\x00WE", ("WEBP",), UndecodableImage, "WEBP"),
        (b"RIFF\x00\x00\x00\x00WAVE", ("WEBP",), UnsupportedFormat, None),
        (b"BM", ("BMP",), UndecodableImage, "BMP"),
        (b"GIF89a", ("JPEG", "PNG"), UnsupportedFormat, "GIF"),
        (b"GIF89", ("GIF",), UndecodableImage, "GIF"),
        (b"\x00", ("PNG",), UnsupportedFormat, None),
    ],
    ids=[
        "jpeg-signature-only",
        "jpeg-signature-cut",
        "jpeg-prefix-when-only-png-allowed",
        "webp-signature-cut",
        "riff-but-wave",
        "bmp-signature-only",
        "gif-when-not-allowed",
        "gif-signature-cut",
        "one-zero-byte",
    ],
)
def test_signature_decides_between_415_and_422(
    data: bytes, allowed: tuple[str, ...], error: type[ImageError], fmt: str | None
) -> None:
    with pytest.raises(error) as caught:
        decode(data, allowed=allowed)
    assert type(caught.value) is error
    if isinstance(caught.value, UnsupportedFormat):
        assert caught.value.detected == fmt
        assert caught.value.allowed == allowed


def test_allowed_format_is_identified_whatever_the_name() -> None:
    gif = save(photo_crop(), "GIF")
    assert identify_format(gif, ["png", "gif"]) == "GIF"
    with pytest.raises(ValueError, match="TIFF"):
        identify_format(gif, ["GIF", "TIFF"])


# --- probing the size from the header --------------------------------------------------------


def _probe_samples() -> dict[str, bytes]:
    image = photo_crop()
    exif = Image.Exif()
    exif[0x0112] = 6
    samples = {
        "jpeg-baseline": save(image, "JPEG"),
        "jpeg-progressive": save(image, "JPEG", progressive=True),
        "jpeg-exif-icc": save(image, "JPEG", exif=exif, icc_profile=b"\x00" * 70_000),
        "jpeg-cmyk": save(image.convert("CMYK"), "JPEG"),
        "jpeg-gray": save(image.convert("L"), "JPEG"),
        "png-rgb": save(image, "PNG"),
        "png-1x10000": save(Image.new("L", (1, 10_000)), "PNG"),
        "gif": save(image, "GIF"),
        "webp-lossy": save(image, "WEBP"),
        "webp-lossless": save(image, "WEBP", lossless=True),
        "webp-extended": save(image, "WEBP", exif=exif),
        "webp-odd-size": save(image.crop((0, 0, 77, 41)), "WEBP"),
        "bmp": save(image, "BMP"),
        "bmp-palette": save(image.convert("P"), "BMP"),
    }
    for path in sorted(DATA_DIR.iterdir()):
        if path.suffix in (".png", ".jpg", ".gif"):
            samples[f"bundled-{path.name}"] = path.read_bytes()
    return samples


PROBE_SAMPLES = _probe_samples()


@pytest.mark.parametrize("name", PROBE_SAMPLES)
def test_probe_size_agrees_with_pillow(name: str) -> None:
    data = PROBE_SAMPLES[name]
    with Image.open(io.BytesIO(data)) as im:
        assert probe_size(data, INPUT_FORMATS) == im.size


def test_probe_size_reports_the_stored_size_and_checks_the_limit() -> None:
    data = save(Image.new("RGB", (30, 20)), "PNG")
    assert probe_size(data, ["PNG"]) == (30, 20)
    assert probe_size(data, ["PNG"], max_pixels=600) == (30, 20)
    with pytest.raises(ImageTooLarge):
        probe_size(data, ["PNG"], max_pixels=599)
    with pytest.raises(UndecodableImage, match="empty image"):
        probe_size(png_with_size(data, 0, 20), ["PNG"])


# --- pixel content ---------------------------------------------------------------------------

# EXIF orientation -> how the stored pixels derive from the upright picture, read off the
# specification's (row 0, column 0) table rather than from Pillow's transpose constants.
STORED_FROM_UPRIGHT: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    1: lambda u: u,  # row 0 = top, column 0 = left
    2: lambda u: u[:, ::-1],  # top, right
    3: lambda u: u[::-1, ::-1],  # bottom, right
    4: lambda u: u[::-1, :],  # bottom, left
    5: lambda u: u.transpose(1, 0, 2),  # left, top
    6: lambda u: np.rot90(u, 1),  # right, top
    7: lambda u: np.rot90(u, 1)[:, ::-1],  # right, bottom
    8: lambda u: np.rot90(u, -1),  # left, bottom
}
QUADRANT_COLORS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)]


def _quadrant_means(rgb: np.ndarray) -> list[np.ndarray]:
    h, w = rgb.shape[0] // 2, rgb.shape[1] // 2
    corners = [(0, 0), (0, w), (h, 0), (h, w)]
    return [rgb[y + 4 : y + h - 4, x + 4 : x + w - 4].reshape(-1, 3).mean(0) for y, x in corners]


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
@pytest.mark.parametrize("orientation", list(STORED_FROM_UPRIGHT))
def test_exif_orientation_is_applied(orientation: int, fmt: str) -> None:
    upright = np.asarray(quadrants((64, 32), QUADRANT_COLORS))
    stored = Image.fromarray(np.ascontiguousarray(STORED_FROM_UPRIGHT[orientation](upright)))
    exif = Image.Exif()
    exif[0x0112] = orientation
    rgb = decode(save(stored, fmt, exif=exif, quality=95))
    assert rgb.shape == (32, 64, 3)
    for got, want in zip(_quadrant_means(rgb), QUADRANT_COLORS, strict=True):
        assert np.abs(got - want).max() < 25, (got, want)


# Pillow only warns about corrupt EXIF; the suite's filterwarnings=error would turn that into a
# failure production never sees, so restore production's view for this one warning.
@pytest.mark.filterwarnings("ignore:Corrupt EXIF data:UserWarning")
def test_broken_exif_is_ignored_not_fatal() -> None:
    """The picture decodes as stored; a broken orientation tag is no reason to refuse it."""
    jpeg = save(photo_crop(), "JPEG")
    app1 = b"Exif\x00\x00" + b"MM\x00*\x00\x00\x00\x08" + b"\xff" * 10
    data = jpeg[:2] + b"\xff\xe1" + (len(app1) + 2).to_bytes(2, "big") + app1 + jpeg[2:]
    assert decode(data).shape == (64, 80, 3)


GRAY16 = [0, 1, 128, 129, 257, 1000, 32767, 32768, 65279, 65535]


def test_16_bit_gray_is_scaled_by_its_depth_not_clipped() -> None:
    samples = np.array([GRAY16], dtype=np.uint16)
    rgb = decode(save(Image.fromarray(samples), "PNG"))
    expected = [round(v / 257) for v in GRAY16]  # 65535 / 255 = 257
    assert rgb[0, :, 0].tolist() == expected
    assert expected[-4:] == [127, 128, 254, 255]
    assert np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2])


def _alpha_on_white(color: int, alpha: int) -> int:
    return round(color * alpha / 255 + 255 * (1 - alpha / 255))


ALPHAS = [0, 1, 64, 128, 254, 255]


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_is_composited_on_white(mode: str) -> None:
    color = 40
    image = Image.new(mode, (len(ALPHAS), 1))
    image.putdata([(color,) * (len(mode) - 1) + (a,) for a in ALPHAS])
    rgb = decode(save(image, "PNG"))
    assert rgb[0, :, 0].tolist() == [_alpha_on_white(color, a) for a in ALPHAS]


def _with_key(mode: str, value: object, key: object) -> bytes:
    return save(halves(mode, (8, 2), value, key), "PNG", transparency=key)


@pytest.mark.parametrize(
    ("data", "left", "right"),
    [
        (_with_key("RGB", (10, 20, 30), (200, 0, 0)), (10, 20, 30), (255, 255, 255)),
        (_with_key("L", 50, 0), (50, 50, 50), (255, 255, 255)),
        (
            save(halves("I;16", (8, 2), 65535, 0), "PNG", transparency=0),
            (255, 255, 255),
            (255, 255, 255),
        ),
        (
            save(halves("I;16", (8, 2), 0, 65535), "PNG", transparency=65535),
            (0, 0, 0),
            (255, 255, 255),
        ),
        (save(halves("1", (8, 2), 0, 1), "PNG"), (0, 0, 0), (255, 255, 255)),
        (save(halves("L", (8, 2), 77, 200), "PNG"), (77, 77, 77), (200, 200, 200)),
        (save(halves("RGB", (8, 2), (1, 2, 3), (250, 128, 0)), "PNG"), (1, 2, 3), (250, 128, 0)),
        (
            save(
                halves("RGB", (8, 2), (200, 10, 10), (10, 10, 200)).convert(
                    "P", palette=Image.Palette.ADAPTIVE
                ),
                "PNG",
            ),
            (200, 10, 10),
            (10, 10, 200),
        ),
    ],
    ids=[
        "rgb-colour-key",
        "l-gray-key",
        "gray16-key-0",
        "gray16-key-65535",
        "bilevel",
        "l",
        "rgb",
        "palette",
    ],
)
def test_modes_normalise_to_exact_rgb(
    data: bytes, left: tuple[int, ...], right: tuple[int, ...]
) -> None:
    rgb = decode(data)
    assert tuple(rgb[0, 0]) == left
    assert tuple(rgb[0, -1]) == right


@pytest.mark.parametrize(
    ("mode", "values", "expected"),
    [
        ("I", [-5, 0, 257, 32768, 65535, 70000], [0, 0, 1, 128, 255, 255]),
        ("I;16B", [0, 257, 32768, 65535], [0, 1, 128, 255]),
        ("F", [-1.0, 0.4, 127.6, 255.0, 300.0], [0, 0, 128, 255, 255]),
    ],
)
def test_modes_no_allowed_format_produces_still_normalise(
    mode: str, values: list[float], expected: list[int]
) -> None:
    """Modes only TIFF-like formats produce, fed to the converter directly in case one leaks in."""
    image = Image.new(mode, (len(values), 1))
    image.putdata(values)
    rgb = decode_module._to_rgb(image)
    assert rgb[0, :, 0].tolist() == expected
    assert rgb.flags.c_contiguous and rgb.shape == (1, len(values), 3)


def test_cmyk_jpeg_is_not_inverted() -> None:
    cmyk = halves("CMYK", (32, 16), (0, 255, 255, 0), (0, 0, 0, 0))
    rgb = decode(save(cmyk, "JPEG", quality=95))
    assert np.abs(rgb[8, 4].astype(int) - (255, 0, 0)).max() < 12
    assert np.abs(rgb[8, 28].astype(int) - (255, 255, 255)).max() < 12


@pytest.mark.parametrize(
    ("fmt", "params"),
    [("GIF", {"loop": 0}), ("PNG", {}), ("WEBP", {"lossless": True})],
    ids=["gif", "apng", "webp"],
)
def test_animation_gives_its_first_frame(fmt: str, params: dict[str, object]) -> None:
    frames = [Image.new("RGB", (20, 10), color) for color in ((200, 30, 30), (30, 30, 200))]
    data = save(frames[0], fmt, save_all=True, append_images=frames[1:], duration=50, **params)
    with Image.open(io.BytesIO(data)) as im:
        assert getattr(im, "n_frames", 1) == 2
    rgb = decode(data)
    assert np.abs(rgb.astype(int) - (200, 30, 30)).max() <= 2


@pytest.mark.parametrize("case", [c for c in ACCEPTED if c.absent], ids=case_id)
def test_payload_after_the_image_is_gone_once_reencoded(case: Case) -> None:
    assert case.absent is not None and case.absent in case.data
    rgb = decode(case.data)
    assert np.array_equal(rgb, decode(case.data.replace(case.absent, b"")))
    for fmt in ("jpeg", "png", "webp"):
        assert case.absent not in encode_image(rgb, fmt)


def test_real_photos_decode_to_what_pillow_sees() -> None:
    for name in ("astronaut.png", "rocket.jpg", "hubble_deep_field.jpg"):
        data = Path(DATA_DIR / name).read_bytes()
        assert np.array_equal(decode(data, max_pixels=40_000_000), pillow_rgb(data))


def test_minimal_gif_frame_inside_screen_is_fine() -> None:
    assert decode(minimal_gif((1, 1), (1, 1))).tolist() == [[[0, 0, 0]]]


def _mutations(seed: bytes, rng: np.random.Generator) -> bytes:
    data = bytearray(seed)
    kind = int(rng.integers(4))
    for _ in range(int(rng.integers(1, 6))):
        if kind == 0:  # anywhere
            data[int(rng.integers(len(data)))] = int(rng.integers(256))
        elif kind == 1:  # in the header
            data[int(rng.integers(min(len(data), 64)))] = int(rng.integers(256))
        elif kind == 2:  # cut short
            del data[1 + int(rng.integers(len(data))) :]
        else:  # bytes inserted
            at = int(rng.integers(len(data)))
            data[at:at] = rng.integers(0, 256, int(rng.integers(1, 16)), np.uint8).tobytes()
    return bytes(data)


def test_mutated_files_only_ever_raise_image_errors() -> None:
    """Never a 500: 2000 seeded corruptions of the accepted cases pass the header probe and decode,
    or raise an ImageError from one of them."""
    rng = np.random.default_rng(2024)
    seeds = [c.data for c in ACCEPTED if len(c.data) < 20_000]
    outcomes: set[object] = set()
    for n in range(2000):
        data = _mutations(seeds[n % len(seeds)], rng)
        try:
            probe_header(data, allowed_formats=INPUT_FORMATS, max_pixels=LIMIT)
            rgb = decode(data)
        except ImageError as exc:
            outcomes.add(answer(exc.outcome).status)
        else:
            assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
            outcomes.add(200)
    assert outcomes == {200, 413, 415, 422}  # the corruptions reach every branch


# --- chroma_level ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg"])
def test_colour_photos_have_chroma(name: str) -> None:
    rgb = photo(name)
    level = chroma_level(rgb)
    assert level > 5 * GRAYSCALE_CHROMA
    gray = np.repeat(np.asarray(Image.fromarray(rgb).convert("L"))[:, :, None], 3, axis=2)
    assert chroma_level(gray) < GRAYSCALE_CHROMA / 100
    assert chroma_level(pillow_rgb(save(Image.fromarray(gray), "JPEG", quality=50))) < 0.1


def test_chroma_level_is_cielab_chroma() -> None:
    red = np.zeros((4, 4, 3), np.uint8)
    red[..., 0] = 255
    # sRGB red is L*a*b* (53.24, 80.09, 67.20): chroma hypot(80.09, 67.20) = 104.55.
    assert chroma_level(red) == pytest.approx(104.55, abs=0.01)


@pytest.mark.parametrize("name", ["coffee.png", "rocket.jpg"])
def test_chroma_level_subsamples_big_images_faithfully(name: str) -> None:
    rgb = np.ascontiguousarray(np.tile(photo(name), (3, 3, 1)))  # over a megapixel
    lab = rgb2lab(rgb)
    every_pixel = float(np.hypot(lab[..., 1], lab[..., 2]).mean())
    assert chroma_level(rgb) == pytest.approx(every_pixel, abs=0.15)


def test_chroma_level_rejects_non_images() -> None:
    with pytest.raises(ValueError, match="RGB uint8"):
        chroma_level(np.zeros((4, 4), np.uint8))
