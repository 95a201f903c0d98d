"""Which container a video upload is, decided by its leading bytes, never by its name or type.

Accepted, by signature:

- **MP4**: an ISO base media file (`ftyp` at offset 4) whose major or a compatible brand is an
  MPEG-4 / 3GPP video brand (isom, iso2-iso9, mp41, mp42, avc1, dash, M4V, 3gp4-3gp9, 3g2a...).
- **MOV**: QuickTime, major brand `qt  `, or an old QuickTime file with no `ftyp` that starts
  with a `moov`, `mdat`, `wide`, `free`, `skip` or `pnot` atom.
- **WebM**: EBML (`1A 45 DF A3`) whose DocType is `webm`.
- **Matroska (MKV)**: EBML whose DocType is `matroska`. Accepted by default, on purpose: WebM *is*
  Matroska with a shorter codec list, FFmpeg reads both with the same demuxer (`matroska,webm`),
  and the DocType is four bytes a sender can rewrite, so refusing MKV would protect nothing while
  turning away the most common container for films. Every limit (streams, size, duration) applies
  to MKV exactly as to WebM; operators who want WebM only set COLORIZE_VIDEO_CONTAINERS.

Images are not videos. A still image (JPEG, PNG, BMP, WebP, HEIF/AVIF) sent as a video is
**invalid_video (422)**: the file is well formed but not what this path takes, and the detail says
to send it to the image path. **Animated GIF, APNG and animated WebP stay images**: the image path
colours their first frame, as it always has; sent as a video they get the same 422, with a detail
that says so. Turning them into videos would need frame timing and disposal rules the image
decoders do not give us, and a GIF colourised at 256 colours per frame looks worse than its first
frame as a PNG.

Everything else (markup, text, other media containers such as AVI, MPEG-TS, FLV, Ogg, ASF, random
bytes) is **unsupported_format (415)**, with a detail naming what was recognised.
"""

from __future__ import annotations

from enum import Enum

from service.imaging.decode import SIGNATURES as IMAGE_SIGNATURES
from service.video.errors import InvalidVideo, UnsupportedVideo

SNIFF_BYTES = 4096
"""Bytes read from the start of a file to decide its container (an `ftyp` with its brands, the
EBML header, a PNG's chunks up to its first frame)."""


class Container(str, Enum):
    """An accepted video container; the value is its COLORIZE_VIDEO_CONTAINERS name."""

    MP4 = "mp4"
    MOV = "mov"
    WEBM = "webm"
    MATROSKA = "matroska"

    @property
    def demuxer(self) -> str:
        """The FFmpeg demuxer that must read it: never left to FFmpeg's own guess."""
        return "mov" if self in (Container.MP4, Container.MOV) else "matroska"

    @property
    def label(self) -> str:
        return _LABELS[self]


_LABELS = {
    Container.MP4: "MP4",
    Container.MOV: "MOV",
    Container.WEBM: "WebM",
    Container.MATROSKA: "Matroska (MKV)",
}
_ISO_VIDEO_BRANDS = frozenset(
    (
        *(b"iso%d" % n for n in range(2, 10)),
        *(b"3gp%d" % n for n in range(4, 10)),
        *(b"3g2" + c for c in (b"a", b"b", b"c")),
        b"isom", b"mp41", b"mp42", b"mp71", b"avc1", b"dash", b"M4V ", b"M4VH", b"M4VP",
        b"MSNV", b"NDAS", b"XAVC", b"f4v ", b"F4V ", b"mmp4", b"3ge6", b"3ge7", b"3gg6",
        b"cmfc", b"cmf2",
    )
)  # fmt: skip
_ISO_AUDIO_BRANDS = {b"M4A ": "M4A audio", b"M4B ": "M4B audiobook", b"F4A ": "F4A audio"}
_QUICKTIME_BRAND = b"qt  "
_IMAGE_BRANDS = {
    b"heic": "HEIF",
    b"heix": "HEIF",
    b"heim": "HEIF",
    b"heis": "HEIF",
    b"hevc": "HEIF image sequence",
    b"hevx": "HEIF image sequence",
    b"mif1": "HEIF",
    b"msf1": "HEIF image sequence",
    b"avif": "AVIF",
    b"avis": "animated AVIF",
    b"avci": "AVC image (HEIF)",
    b"jpgs": "JPEG image sequence (HEIF)",
    b"crx ": "Canon raw (CR3)",
    b"jp2 ": "JPEG 2000",
}
_QUICKTIME_ATOMS = (b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot")
_EBML_MAGIC = b"\x1a\x45\xdf\xa3"
_DOCTYPE_ID = b"\x42\x82"

_OTHER_MEDIA: tuple[tuple[str, int, bytes], ...] = (
    ("AVI", 8, b"AVI "),
    ("WAV audio", 8, b"WAVE"),
    ("FLV", 0, b"FLV\x01"),
    ("Ogg", 0, b"OggS"),
    ("ASF (WMV)", 0, b"\x30\x26\xb2\x75\x8e\x66\xcf\x11"),
    ("MPEG program stream", 0, b"\x00\x00\x01\xba"),
    ("MP3 audio", 0, b"ID3"),
    ("PDF", 0, b"%PDF-"),
    ("ZIP", 0, b"PK\x03\x04"),
    ("GZIP", 0, b"\x1f\x8b"),
    ("TIFF", 0, b"II*\x00"),
    ("TIFF", 0, b"MM\x00*"),
)
_MARKUP = (("SVG", b"<svg"), ("HTML", b"<!doctype html"), ("HTML", b"<html"), ("XML", b"<?xml"))


def _accepted(limits_containers: tuple[str, ...]) -> str:
    return ", ".join(Container(c).label for c in limits_containers)


def sniff(head: bytes, containers: tuple[str, ...]) -> Container:
    """The container of a file starting with `head` (at least SNIFF_BYTES of it, if it has them).

    Raises InvalidVideo (422) for an empty or cut file of an accepted kind and for images, and
    UnsupportedVideo (415) for anything else, or an accepted kind the operator switched off.
    """
    if not head:
        raise InvalidVideo("the file is empty")
    container = _iso(head) or _ebml(head)
    if container is None:
        _refuse_image(head)
        raise UnsupportedVideo(f"{_describe(head)}; accepted: {_accepted(containers)}")
    if container.value not in containers:
        raise UnsupportedVideo(
            f"{container.label} is not accepted here; accepted: {_accepted(containers)} "
            "(COLORIZE_VIDEO_CONTAINERS)"
        )
    return container


def _iso(head: bytes) -> Container | None:
    kind = head[4:8]
    if kind == b"ftyp":
        size = int.from_bytes(head[:4], "big")
        if len(head) < 12 or (size >= 16 and len(head) < min(size, SNIFF_BYTES)):
            raise InvalidVideo(f"truncated ISO media file ({len(head)} bytes)")
        major = head[8:12]
        compatible = [head[i : i + 4] for i in range(16, min(size, len(head)) - 3, 4)]
        if major == _QUICKTIME_BRAND:
            return Container.MOV
        if major in _IMAGE_BRANDS:
            raise InvalidVideo(
                f"this is a still image ({_IMAGE_BRANDS[major]}), not a video: send it to the "
                "image path"
            )
        if major in _ISO_AUDIO_BRANDS:
            raise UnsupportedVideo(f"{_ISO_AUDIO_BRANDS[major]} is not a video")
        if major in _ISO_VIDEO_BRANDS or any(b in _ISO_VIDEO_BRANDS for b in compatible):
            return Container.MP4
        if _QUICKTIME_BRAND in compatible:
            return Container.MOV
        raise UnsupportedVideo(f"ISO media with brand {major.decode('latin-1')!r} is not a video")
    if len(head) >= 8 and kind in _QUICKTIME_ATOMS and _plausible_atom(head):
        return Container.MOV
    return None


def _plausible_atom(head: bytes) -> bool:
    # Old QuickTime files have no signature beyond their first atom; random bytes that happen to
    # spell `free` at offset 4 still need a size that is 0 (to the end), 1 (64-bit) or >= 8.
    size = int.from_bytes(head[:4], "big")
    return size in (0, 1) or size >= 8


def _ebml(head: bytes) -> Container | None:
    if not head.startswith(_EBML_MAGIC[: len(head)]):
        return None
    if len(head) < 5:
        raise InvalidVideo(f"truncated EBML (Matroska/WebM) header ({len(head)} bytes)")
    header_size, offset = _vint(head, 4)
    if header_size is None:
        raise InvalidVideo("corrupt EBML header size")
    end = min(len(head), offset + header_size)
    at = head.find(_DOCTYPE_ID, offset, end)
    if at < 0:
        if offset + header_size > len(head):
            raise InvalidVideo("truncated EBML (Matroska/WebM) header")
        return Container.MATROSKA  # the Matroska specification's default DocType
    length, start = _vint(head, at + 2)
    if length is None or start + length > len(head):
        raise InvalidVideo("truncated EBML DocType")
    doctype = head[start : start + length].rstrip(b"\x00")
    if doctype == b"webm":
        return Container.WEBM
    if doctype == b"matroska":
        return Container.MATROSKA
    raise UnsupportedVideo(f"EBML document of type {doctype.decode('latin-1')!r} is not a video")


def _vint(data: bytes, offset: int) -> tuple[int | None, int]:
    """An EBML variable-length size at `offset`: (value or None, offset after it)."""
    if offset >= len(data) or data[offset] == 0:
        return None, offset
    first = data[offset]
    length = 8 - first.bit_length() + 1
    if offset + length > len(data):
        return None, offset
    value = first & ((1 << (8 - length)) - 1)
    for byte in data[offset + 1 : offset + length]:
        value = (value << 8) | byte
    return value, offset + length


def _refuse_image(head: bytes) -> None:
    for name, signatures in IMAGE_SIGNATURES.items():
        for signature in signatures:
            if all(head[o : o + len(b)] == b for o, b in signature):
                raise InvalidVideo(_image_detail(name, head))


def _image_detail(name: str, head: bytes) -> str:
    if name == "GIF":
        what = "a GIF (animated or not) is an image"
    elif name == "PNG" and _apng(head):
        what = "an animated PNG (APNG) is an image"
    elif name == "WEBP" and _animated_webp(head):
        what = "an animated WebP is an image"
    else:
        return f"this is a still image ({name}), not a video: send it to the image path"
    return f"{what}, not a video: the image path colours its first frame"


def _apng(head: bytes) -> bool:
    # An APNG announces itself with an acTL chunk before the first IDAT.
    at = 8
    while at + 8 <= len(head):
        length = int.from_bytes(head[at : at + 4], "big")
        kind = head[at + 4 : at + 8]
        if kind == b"acTL":
            return True
        if kind == b"IDAT":
            return False
        at += 12 + length
    return False


def _animated_webp(head: bytes) -> bool:
    return head[12:16] == b"VP8X" and len(head) > 20 and bool(head[20] & 0x02)


def _describe(head: bytes) -> str:
    for name, offset, magic in _OTHER_MEDIA:
        if head[offset : offset + len(magic)] == magic:
            return f"{name} is not accepted"
    if len(head) > 376 and head[0] == head[188] == head[376] == 0x47:
        return "MPEG transport stream is not accepted"
    text = head[:1024].removeprefix(b"\xef\xbb\xbf").lstrip().lower()
    for name, tag in _MARKUP:
        if text.startswith(tag) or (name == "SVG" and tag in text):
            return f"{name} is not a video"
    return "unrecognised file content"
