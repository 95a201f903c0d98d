"""What a container's own headers declare, read by a bounded walk before FFmpeg sees the file.

FFmpeg's `avformat_open_input` and `avformat_find_stream_info` already allocate from what the
headers say: the MP4 demuxer builds an in-memory index entry for every declared sample (24 bytes
each: a forged count of a billion would ask for 24 GB) and the stream probe decodes frames at the
declared size. So the limits are first checked against this walk, which reads only box and
element headers and a few small payloads (never `mdat` or a `Cluster`), visits a bounded number of
them, and keeps nothing but the numbers below.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import BinaryIO

from service.video.errors import InvalidVideo
from service.video.sniff import Container


@dataclass(frozen=True)
class DeclaredTrack:
    """One track as its headers describe it (None: not declared)."""

    kind: str
    """video, audio, or other (subtitles, timecode, metadata)."""
    width: int | None = None
    height: int | None = None
    frames: int | None = None
    """Samples in the track (ISO `stsz`); Matroska declares none."""


@dataclass(frozen=True)
class DeclaredHeaders:
    tracks: tuple[DeclaredTrack, ...]
    duration_s: float | None
    """The presentation's declared length (ISO `mvhd`, Matroska `Duration`)."""

    def of_kind(self, kind: str) -> list[DeclaredTrack]:
        return [t for t in self.tracks if t.kind == kind]


def read_headers(file: BinaryIO, size: int, container: Container, budget: int) -> DeclaredHeaders:
    """Walk `file`'s headers (at most `budget` boxes or elements); InvalidVideo if cut short."""
    walk = _Walk(file, size, budget)
    if container in (Container.MP4, Container.MOV):
        return walk.iso()
    return walk.matroska()


_HANDLERS = {b"vide": "video", b"soun": "audio"}
_ISO_CONTAINERS = {b"trak", b"mdia", b"minf", b"stbl"}

# Matroska element IDs (with their length marker bits, as written).
_SEGMENT, _CLUSTER, _INFO, _TRACKS = 0x18538067, 0x1F43B675, 0x1549A966, 0x1654AE6B
_TRACK_ENTRY, _TRACK_TYPE, _VIDEO = 0xAE, 0x83, 0xE0
_PIXEL_WIDTH, _PIXEL_HEIGHT, _TIMESTAMP_SCALE, _DURATION = 0xB0, 0xBA, 0x2AD7B1, 0x4489
_TRACK_KINDS = {1: "video", 2: "audio"}
_UNKNOWN = -1


class _Walk:
    def __init__(self, file: BinaryIO, size: int, budget: int) -> None:
        self.file = file
        self.size = size
        self.budget = budget

    def _read(self, offset: int, count: int) -> bytes:
        self.file.seek(offset)
        return self.file.read(count)

    def _visit(self) -> None:
        self.budget -= 1
        if self.budget < 0:
            raise InvalidVideo("the container's headers have too many boxes to be a video")

    # -- ISO base media (MP4, MOV) ---------------------------------------------------------

    def _boxes(self, start: int, end: int) -> list[tuple[bytes, int, int]]:
        """(type, payload start, box end) of the boxes between `start` and `end`."""
        boxes = []
        at = start
        while at + 8 <= end:
            self._visit()
            header = self._read(at, 16)
            size, kind = struct.unpack(">I4s", header[:8])
            payload = at + 8
            if size == 1:
                if len(header) < 16:
                    raise InvalidVideo("truncated ISO media box header")
                size = struct.unpack(">Q", header[8:16])[0]
                payload = at + 16
            elif size == 0:
                size = end - at
            if size < payload - at:
                raise InvalidVideo(f"corrupt ISO media box {_name(kind)} (size {size})")
            boxes.append((kind, payload, at + size))
            if at + size > end:
                break  # cut short: the caller decides whether what it needs was before the cut
            at += size
        return boxes

    def iso(self) -> DeclaredHeaders:
        top = self._boxes(0, self.size)
        moov = next(((s, e) for k, s, e in top if k == b"moov"), None)
        if moov is None or moov[1] > self.size:
            cut = any(e > self.size for _, _, e in top)
            raise InvalidVideo(
                "no complete moov box: the upload was cut short"
                if cut or moov is not None
                else "no moov box: not a finished MP4/MOV (an upload cut short, or a recording "
                "that was never closed)"
            )
        tracks = []
        duration = None
        for kind, start, end in self._boxes(*moov):
            if kind == b"mvhd":
                duration = _mvhd_duration(self._read(start, 32))
            elif kind == b"trak":
                tracks.append(self._trak(start, end))
        return DeclaredHeaders(tuple(tracks), duration)

    def _trak(self, start: int, end: int) -> DeclaredTrack:
        found: dict[bytes, bytes] = {}
        pending = [(start, end)]
        while pending:
            for kind, s, e in self._boxes(*pending.pop()):
                if e > end:
                    raise InvalidVideo("truncated trak box")
                if kind in _ISO_CONTAINERS:
                    pending.append((s, e))
                elif kind in (b"tkhd", b"hdlr", b"stsd", b"stsz", b"stz2") and kind not in found:
                    found[kind] = self._read(s, min(e - s, 128))
        role = _HANDLERS.get(found.get(b"hdlr", b"")[8:12], "other")
        width = height = tk_width = tk_height = None
        if role == "video":
            width, height = _stsd_size(found.get(b"stsd", b""))
            tk_width, tk_height = _tkhd_size(found.get(b"tkhd", b""))
        # The coded size (stsd) is what a decoder allocates; the display size (tkhd) may be
        # larger for anamorphic video. The limits apply to whichever is larger.
        counts = found.get(b"stsz") or found.get(b"stz2") or b""
        frames = struct.unpack(">I", counts[8:12])[0] if len(counts) >= 12 else None
        return DeclaredTrack(
            kind=role,
            width=_larger(width, tk_width),
            height=_larger(height, tk_height),
            frames=frames,
        )

    # -- Matroska / WebM ---------------------------------------------------------------------

    def _elements(self, start: int, end: int) -> list[tuple[int, int, int]]:
        """(id, payload start, element end) of the elements between `start` and `end`; an
        element of unknown size (live streams) ends at `end`."""
        elements = []
        at = start
        while at < end:
            self._visit()
            head = self._read(at, 12)
            ident, after_id = _element_id(head)
            size, after_size = _size(head, after_id)
            if ident is None or size is None:
                if at + len(head) >= self.size:
                    break  # cut mid-header at the end of the file
                raise InvalidVideo(f"corrupt Matroska element at byte {at}")
            payload = at + after_size
            element_end = end if size == _UNKNOWN else payload + size
            elements.append((ident, payload, element_end))
            if ident == _CLUSTER or element_end > end:
                break  # media data from here on: the headers are behind us
            at = element_end
        return elements

    def matroska(self) -> DeclaredHeaders:
        segment = next(((s, e) for i, s, e in self._elements(0, self.size) if i == _SEGMENT), None)
        if segment is None:
            raise InvalidVideo("no Matroska Segment: the file is cut short or corrupt")
        tracks: list[DeclaredTrack] = []
        duration = None
        scale = 1_000_000  # TimestampScale's default: milliseconds
        seen_tracks = False
        for ident, start, end in self._elements(*segment):
            if ident == _INFO:
                for i, s, e in self._elements(start, end):
                    if i == _TIMESTAMP_SCALE:
                        scale = _uint(self._read(s, min(e - s, 8)))
                    elif i == _DURATION:
                        duration = _float(self._read(s, min(e - s, 8)))
            elif ident == _TRACKS:
                seen_tracks = True
                for i, s, e in self._elements(start, end):
                    if i == _TRACK_ENTRY:
                        tracks.append(self._track_entry(s, e))
        if not seen_tracks:
            raise InvalidVideo("no Matroska Tracks before the media data: cut short or corrupt")
        seconds = None if duration is None else duration * scale / 1e9
        return DeclaredHeaders(tuple(tracks), seconds)

    def _track_entry(self, start: int, end: int) -> DeclaredTrack:
        kind, width, height = "other", None, None
        for ident, s, e in self._elements(start, end):
            if ident == _TRACK_TYPE:
                kind = _TRACK_KINDS.get(_uint(self._read(s, min(e - s, 8))), "other")
            elif ident == _VIDEO:
                for i, vs, ve in self._elements(s, e):
                    if i == _PIXEL_WIDTH:
                        width = _uint(self._read(vs, min(ve - vs, 8)))
                    elif i == _PIXEL_HEIGHT:
                        height = _uint(self._read(vs, min(ve - vs, 8)))
        return DeclaredTrack(kind=kind, width=width, height=height)


def _name(kind: bytes) -> str:
    return repr(kind.decode("latin-1"))


def _larger(a: int | None, b: int | None) -> int | None:
    values = [v for v in (a, b) if v]
    return max(values) if values else None


def _mvhd_duration(payload: bytes) -> float | None:
    if payload[:1] == b"\x01" and len(payload) >= 32:
        timescale, duration = struct.unpack(">IQ", payload[20:32])
    elif len(payload) >= 20:
        timescale, duration = struct.unpack(">II", payload[12:20])
    else:
        return None
    # All ones means "unknown" (fragmented files leave it so).
    unknown = duration in (0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF)
    return None if timescale == 0 or unknown else duration / timescale


def _tkhd_size(payload: bytes) -> tuple[int | None, int | None]:
    at = 88 if payload[:1] == b"\x01" else 76
    if len(payload) < at + 8:
        return None, None
    width, height = struct.unpack(">II", payload[at : at + 8])
    return width >> 16, height >> 16  # 16.16 fixed point


def _stsd_size(payload: bytes) -> tuple[int | None, int | None]:
    # version/flags (4), entry count (4), then the first sample entry: size (4), format (4),
    # reserved (6), data reference index (2), pre-defined and reserved (16), width, height.
    if len(payload) < 44:
        return None, None
    width, height = struct.unpack(">HH", payload[40:44])
    return width, height


def _element_id(data: bytes) -> tuple[int | None, int]:
    if not data or data[0] == 0:
        return None, 0
    length = 9 - data[0].bit_length()
    if length > 4 or len(data) < length:
        return None, 0
    return int.from_bytes(data[:length], "big"), length


def _size(data: bytes, offset: int) -> tuple[int | None, int]:
    if offset >= len(data) or data[offset] == 0:
        return None, offset
    length = 9 - data[offset].bit_length()
    if len(data) < offset + length:
        return None, offset
    value = data[offset] & ((1 << (8 - length)) - 1)
    for byte in data[offset + 1 : offset + length]:
        value = (value << 8) | byte
    if value == (1 << (7 * length)) - 1:
        return _UNKNOWN, offset + length
    return value, offset + length


def _uint(data: bytes) -> int:
    return int.from_bytes(data, "big") if data else 0


def _float(data: bytes) -> float | None:
    if len(data) == 4:
        return float(struct.unpack(">f", data)[0])
    if len(data) == 8:
        return float(struct.unpack(">d", data)[0])
    return None
