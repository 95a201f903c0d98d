"""The container is decided by signature, never by name; images and everything else are refused
with the outcome the module docstring promises."""

from __future__ import annotations

import pytest

from service.outcomes import Outcome
from service.settings import VIDEO_CONTAINERS
from service.video import Container, VideoError, sniff
from tests.support.videos import HTML, Clip, animated_gif, apng, still_jpeg, still_png


def ftyp(major: bytes, *compatible: bytes) -> bytes:
    body = major + b"\x00\x00\x02\x00" + b"".join(compatible)
    return (8 + len(body)).to_bytes(4, "big") + b"ftyp" + body + b"\x00\x00\x00\x08free"


def ebml(doctype: bytes) -> bytes:
    element = b"\x42\x82" + bytes([0x80 | len(doctype)]) + doctype
    return b"\x1a\x45\xdf\xa3" + bytes([0x80 | len(element)]) + element


ACCEPTED = [
    ("isom", ftyp(b"isom", b"isom", b"avc1"), Container.MP4),
    ("mp42", ftyp(b"mp42", b"mp41"), Container.MP4),
    ("3gp phone", ftyp(b"3gp4", b"isom"), Container.MP4),
    ("unknown major, mp4 compatible", ftyp(b"XYZ1", b"isom"), Container.MP4),
    ("quicktime", ftyp(b"qt  ", b"qt  "), Container.MOV),
    ("old quicktime", b"\x00\x00\x00\x08wide\x00\x00\x10\x00mdat", Container.MOV),
    ("webm", ebml(b"webm"), Container.WEBM),
    ("matroska", ebml(b"matroska"), Container.MATROSKA),
]


@pytest.mark.parametrize(
    ("head", "container"), [c[1:] for c in ACCEPTED], ids=[c[0] for c in ACCEPTED]
)
def test_accepted_containers_by_signature(head: bytes, container: Container) -> None:
    assert sniff(head, VIDEO_CONTAINERS) is container


REFUSED = [
    ("empty", b"", Outcome.INVALID_VIDEO, "empty"),
    ("cut ftyp", b"\x00\x00\x00\x18ftyp", Outcome.INVALID_VIDEO, "truncated ISO"),
    ("cut EBML", b"\x1a\x45\xdf", Outcome.INVALID_VIDEO, "truncated EBML"),
    ("HEIF photo", ftyp(b"heic", b"mif1", b"heic"), Outcome.INVALID_VIDEO, "still image (HEIF)"),
    ("animated AVIF", ftyp(b"avis", b"avif"), Outcome.INVALID_VIDEO, "animated AVIF"),
    ("M4A audio", ftyp(b"M4A ", b"isom"), Outcome.UNSUPPORTED_FORMAT, "M4A audio"),
    ("other EBML", ebml(b"mka-x"), Outcome.UNSUPPORTED_FORMAT, "EBML document"),
    ("HTML", HTML, Outcome.UNSUPPORTED_FORMAT, "HTML is not a video"),
    ("AVI", b"RIFF\x00\x10\x00\x00AVI LIST", Outcome.UNSUPPORTED_FORMAT, "AVI is not accepted"),
    ("Ogg", b"OggS\x00\x02" + bytes(30), Outcome.UNSUPPORTED_FORMAT, "Ogg is not accepted"),
    ("MPEG-TS", (b"\x47" + bytes(187)) * 3, Outcome.UNSUPPORTED_FORMAT, "transport stream"),
    ("random", bytes(range(7, 200)), Outcome.UNSUPPORTED_FORMAT, "unrecognised"),
]


@pytest.mark.parametrize(
    ("head", "outcome", "detail"), [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED]
)
def test_refused_heads_name_what_they_are(head: bytes, outcome: Outcome, detail: str) -> None:
    with pytest.raises(VideoError) as info:
        sniff(head, VIDEO_CONTAINERS)
    assert info.value.outcome is outcome
    assert detail in info.value.message


IMAGES = [
    ("PNG", still_png, "still image (PNG)"),
    ("JPEG", still_jpeg, "still image (JPEG)"),
    ("animated GIF", animated_gif, "a GIF (animated or not) is an image"),
    ("APNG", apng, "an animated PNG (APNG) is an image"),
]


@pytest.mark.parametrize(("make", "detail"), [i[1:] for i in IMAGES], ids=[i[0] for i in IMAGES])
def test_images_sent_as_video_are_invalid_video_and_say_so(make: object, detail: str) -> None:
    assert callable(make)
    with pytest.raises(VideoError) as info:
        sniff(make()[:4096], VIDEO_CONTAINERS)
    assert info.value.outcome is Outcome.INVALID_VIDEO
    assert detail in info.value.message


def test_animations_say_the_image_path_takes_their_first_frame() -> None:
    with pytest.raises(VideoError, match="the image path colours its first frame"):
        sniff(apng(), VIDEO_CONTAINERS)


def test_an_operator_can_switch_matroska_off(clip: Clip) -> None:
    head = clip("mkv").read_bytes()[:4096]
    assert sniff(head, VIDEO_CONTAINERS) is Container.MATROSKA
    with pytest.raises(VideoError) as info:
        sniff(head, ("mp4", "mov", "webm"))
    assert info.value.outcome is Outcome.UNSUPPORTED_FORMAT
    assert "Matroska (MKV) is not accepted here" in info.value.message
    assert "COLORIZE_VIDEO_CONTAINERS" in info.value.message


@pytest.mark.parametrize("name", ["mp4", "mov", "webm", "mkv"])
def test_generated_clips_sniff_as_their_container(clip: Clip, name: str) -> None:
    expected = {"mp4": "mp4", "mov": "mov", "webm": "webm", "mkv": "matroska"}[name]
    assert sniff(clip(name).read_bytes()[:4096], VIDEO_CONTAINERS).value == expected
