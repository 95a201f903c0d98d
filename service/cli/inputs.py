"""What `colorize-service colorize` works on: the input files and folders, where each result
goes, and the tally of what happened to them."""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from service.imaging.decode import decode_image
from service.imaging.errors import ImageError
from service.settings import VIDEO_CONTAINERS, Settings
from service.video import VideoError, sniff
from service.video.sniff import SNIFF_BYTES

log = logging.getLogger(__name__)

EXTENSIONS: dict[str, tuple[str, ...]] = {
    "JPEG": (".jpg", ".jpeg", ".jpe", ".jfif"),
    "PNG": (".png",),
    "WEBP": (".webp",),
    "BMP": (".bmp", ".dib"),
    "GIF": (".gif",),
}
"""File name endings looked for when a folder is walked, by Pillow format name."""

VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".webm", ".mkv")
"""File name endings of videos looked for when a folder is walked (what a file is, is then told
by its bytes)."""

OUTPUT_SUFFIX = {"png": ".png", "jpeg": ".jpg", "webp": ".webp"}
VIDEO_SUFFIX = ".mp4"
"""A video's result is always an MP4 (H.264), whatever --format says (that is for images)."""


@dataclass
class Target:
    """One input file and where its result goes."""

    source: Path
    output: Path
    video: bool = False
    """A video, told by its bytes (its result is an MP4)."""


@dataclass
class Tally:
    """What happened to the inputs."""

    done: int = 0
    skipped: int = 0
    failed: list[Path] = field(default_factory=list)
    seconds: float = 0.0
    """Time spent colouring the images that were done (reading to writing)."""
    images: int = 0
    videos: int = 0
    frames: int = 0
    """Frames of the videos done."""
    video_seconds: float = 0.0

    def summary(self) -> str:
        """The last line on stdout."""
        rate = self.images / self.seconds if self.seconds > 0 else 0.0
        line = (
            f"{self.done} done, {self.skipped} skipped, {len(self.failed)} failed "
            f"({rate:.2f} images/s"
        )
        if self.videos:
            fps = self.frames / self.video_seconds if self.video_seconds > 0 else 0.0
            line += f"; {self.videos} videos, {self.frames} frames, {fps:.2f} frames/s"
        return line + ")\n"


class InputFailed(Exception):
    """One input could not be coloured; the message says why."""


def plan_jobs(
    inputs: Sequence[Path], output_dir: Path, fmt: str, settings: Settings
) -> tuple[list[Target], list[Path]]:
    """Jobs for every image or video given or found under a given folder, and the inputs that
    don't exist."""
    suffixes = {s for f in settings.allowed_formats for s in EXTENSIONS.get(f, ())}
    suffixes |= set(VIDEO_EXTENSIONS)
    out_root = output_dir.resolve()
    jobs: list[Target] = []
    missing: list[Path] = []
    for item in inputs:
        if item.is_dir():
            for found in walk(item, suffixes, out_root):
                video = is_video(found)
                suffix = VIDEO_SUFFIX if video else OUTPUT_SUFFIX[fmt]
                relative = found.relative_to(item).with_suffix(suffix)
                jobs.append(Target(found, output_dir / relative, video))
        elif item.exists():
            video = is_video(item)
            suffix = VIDEO_SUFFIX if video else OUTPUT_SUFFIX[fmt]
            jobs.append(Target(item, output_dir / (item.stem + suffix), video))
        else:
            missing.append(item)
    return jobs, missing


def is_video(path: Path) -> bool:
    """Whether the file is a video container we colour, by its leading bytes (as the API
    decides); anything else goes the image way, which says what is wrong with it."""
    try:
        with open(path, "rb") as f:
            head = f.read(SNIFF_BYTES)
        sniff(head, VIDEO_CONTAINERS)
    except (OSError, VideoError):
        return False
    return True


def walk(folder: Path, suffixes: set[str], skip: Path) -> Iterator[Path]:
    """Image files under `folder`, sorted, leaving out `skip` (outputs written inside inputs)."""
    for root, dirs, files in os.walk(folder):
        here = Path(root)
        dirs[:] = sorted(d for d in dirs if (here / d).resolve() != skip)
        for name in sorted(files):
            if Path(name).suffix.lower() in suffixes:
                yield here / name


def claim(
    target: Target, claimed: dict[Path, Path], args: argparse.Namespace, tally: Tally
) -> bool:
    """Whether `target` is to be coloured now: its output is nobody else's and not written yet
    (unless --overwrite)."""
    key = target.output.resolve()
    if key in claimed:
        log.error(
            "%s: output %s is already written from %s", target.source, target.output, claimed[key]
        )
        tally.failed.append(target.source)
        return False
    claimed[key] = target.source
    if target.output.exists() and not args.overwrite:
        tally.skipped += 1
        return False
    return True


def check_reference(path: Path, settings: Settings) -> bytes:
    """The reference photo's bytes, once decoded to prove it is usable; InputFailed if not."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputFailed(f"cannot read: {exc.strerror or exc}") from exc
    try:
        decode_image(data, allowed_formats=settings.allowed_formats, max_pixels=settings.max_pixels)
    except ImageError as exc:
        raise InputFailed(exc.message) from exc
    return data


def write_atomically(path: Path, data: bytes) -> None:
    """Write through a temporary name, so an interrupted run never leaves a half file to skip."""
    partial = path.with_name(f".{path.name}.partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial.write_bytes(data)
        os.replace(partial, path)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise InputFailed(f"cannot write {path}: {exc.strerror or exc}") from exc
