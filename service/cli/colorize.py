"""`colorize-service colorize`: colour image files and folders on this machine, in one process.

Memory is handled exactly as the service handles it: each image reserves its engine's estimate
from a MemoryManager before it runs, and the allocator cache is emptied after it.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from service.device import resolve_device
from service.engines.base import ColorizeRequest, Engine, EngineError, EngineNotReady
from service.engines.bootstrap import fetch_missing
from service.engines.registry import ENGINE_NAMES, create_engine
from service.imaging.decode import decode_image
from service.imaging.encode import CONTENT_TYPES, encode_image
from service.imaging.errors import ImageError
from service.memory import AdmissionError, MemoryManager
from service.settings import Settings, SettingsError, load_settings

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1
"""At least one image failed; the others were written."""
EXIT_USAGE = 2
"""Nothing was attempted: bad arguments or configuration, weights missing, unusable reference."""
EXIT_INTERRUPTED = 130

EXTENSIONS: dict[str, tuple[str, ...]] = {
    "JPEG": (".jpg", ".jpeg", ".jpe", ".jfif"),
    "PNG": (".png",),
    "WEBP": (".webp",),
    "BMP": (".bmp", ".dib"),
    "GIF": (".gif",),
}
"""File name endings looked for when a folder is walked, by Pillow format name."""

OUTPUT_SUFFIX = {"png": ".png", "jpeg": ".jpg", "webp": ".webp"}


def add_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Register `colorize`; its handler is `args.handler(args) -> exit code`."""
    parser = subparsers.add_parser(
        "colorize",
        help="colour image files or folders into an output folder",
        description=(
            "Colour each INPUT (an image, or a folder walked recursively for images) and write "
            "OUTPUT_DIR/<name>.<format>; images found in a folder keep their sub-folder. "
            "Existing outputs are skipped unless --overwrite. A file that fails is reported "
            "and the others go on; the exit code is 1 if any failed."
        ),
    )
    parser.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="images or folders")
    parser.add_argument(
        "--output-dir", "-o", type=Path, required=True, metavar="DIR", help="created if missing"
    )
    parser.add_argument(
        "--model",
        choices=ENGINE_NAMES,
        default=None,
        help="engine (default: COLORIZE_DEFAULT_MODEL, else eccv16)",
    )
    parser.add_argument(
        "--reference",
        type=Path,
        default=None,
        metavar="IMG",
        help="colour photo of the same scene; required by --model exemplar",
    )
    parser.add_argument(
        "--weights-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="checkpoints (default: COLORIZE_WEIGHTS_DIR or the user cache directory)",
    )
    parser.add_argument(
        "--device",
        default=None,
        help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps (default: COLORIZE_DEVICE)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument(
        "--format", choices=sorted(CONTENT_TYPES), default="png", help="output format (png)"
    )
    parser.set_defaults(handler=colorize_command)
    return parser


@dataclass
class Job:
    """One input file and where its result goes."""

    source: Path
    output: Path


@dataclass
class Tally:
    """What happened to the inputs."""

    done: int = 0
    skipped: int = 0
    failed: list[Path] = field(default_factory=list)
    seconds: float = 0.0
    """Time spent colouring the images that were done (reading to writing)."""

    def summary(self) -> str:
        """The last line on stdout."""
        rate = self.done / self.seconds if self.seconds > 0 else 0.0
        return (
            f"{self.done} done, {self.skipped} skipped, {len(self.failed)} failed "
            f"({rate:.2f} images/s)\n"
        )


class InputFailed(Exception):
    """One input could not be coloured; the message says why."""


def colorize_command(args: argparse.Namespace) -> int:
    """Run `colorize`; a setup problem is one stderr line and exit 2, never a traceback."""
    try:
        settings = load_settings()
    except SettingsError as exc:
        return _fail(EXIT_USAGE, str(exc))
    model: str = args.model or settings.default_model
    if model == "exemplar" and args.reference is None:
        return _fail(EXIT_USAGE, "the exemplar model needs --reference IMG (a colour photo)")
    if model != "exemplar" and args.reference is not None:
        return _fail(EXIT_USAGE, f"--reference is only used by the exemplar model, not {model}")
    try:
        device = resolve_device(args.device or settings.device)
    except (ValueError, RuntimeError) as exc:
        return _fail(EXIT_USAGE, str(exc))
    reference = None
    if args.reference is not None:
        try:
            reference = _read_image(args.reference, settings)
        except InputFailed as exc:
            return _fail(EXIT_USAGE, f"reference {args.reference}: {exc}")
    jobs, missing = plan_jobs(args.inputs, args.output_dir, args.format, settings)
    if not jobs and not missing:
        return _fail(EXIT_USAGE, "no images found in " + ", ".join(map(str, args.inputs)))
    weights_dir: Path = args.weights_dir or settings.weights_dir
    fetch_missing(settings, [model], weights_dir)  # a failure shows as the load error below
    engine = create_engine(model, device, weights_dir)
    try:
        engine.load()
    except EngineNotReady as exc:
        return _fail(EXIT_USAGE, exc.reason)
    try:
        args.output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return _fail(EXIT_USAGE, f"cannot create {args.output_dir}: {exc.strerror or exc}")
    # Made after loading, so the weights count as resident memory, not as any job's.
    manager = MemoryManager(device, settings.memory_threshold)
    tally = Tally()
    for path in missing:
        log.error("%s: no such file or folder", path)
        tally.failed.append(path)
    try:
        _run_jobs(jobs, engine, manager, reference, args, settings, tally)
    except KeyboardInterrupt:
        sys.stdout.write(tally.summary())
        return _fail(EXIT_INTERRUPTED, "interrupted; outputs written so far are complete")
    sys.stdout.write(tally.summary())
    return EXIT_FAILED if tally.failed else EXIT_OK


def plan_jobs(
    inputs: Sequence[Path], output_dir: Path, fmt: str, settings: Settings
) -> tuple[list[Job], list[Path]]:
    """Jobs for every image given or found under a given folder, and the inputs that don't exist."""
    suffixes = {s for f in settings.allowed_formats for s in EXTENSIONS.get(f, ())}
    out_root = output_dir.resolve()
    jobs: list[Job] = []
    missing: list[Path] = []
    for item in inputs:
        if item.is_dir():
            for found in _walk(item, suffixes, out_root):
                relative = found.relative_to(item).with_suffix(OUTPUT_SUFFIX[fmt])
                jobs.append(Job(found, output_dir / relative))
        elif item.exists():
            jobs.append(Job(item, output_dir / (item.stem + OUTPUT_SUFFIX[fmt])))
        else:
            missing.append(item)
    return jobs, missing


def _walk(folder: Path, suffixes: set[str], skip: Path) -> Iterator[Path]:
    """Image files under `folder`, sorted, leaving out `skip` (outputs written inside inputs)."""
    for root, dirs, files in os.walk(folder):
        here = Path(root)
        dirs[:] = sorted(d for d in dirs if (here / d).resolve() != skip)
        for name in sorted(files):
            if Path(name).suffix.lower() in suffixes:
                yield here / name


def _run_jobs(
    jobs: list[Job],
    engine: Engine,
    manager: MemoryManager,
    reference: np.ndarray | None,
    args: argparse.Namespace,
    settings: Settings,
    tally: Tally,
) -> None:
    claimed: dict[Path, Path] = {}
    with (
        logging_redirect_tqdm(),
        # disable=None: drawn on a terminal only, so logs and pipes get no carriage returns.
        tqdm(jobs, desc="colorize", unit="img", file=sys.stderr, disable=None) as bar,
    ):
        for job in bar:
            key = job.output.resolve()
            if key in claimed:
                log.error(
                    "%s: output %s is already written from %s", job.source, job.output, claimed[key]
                )
                tally.failed.append(job.source)
                continue
            claimed[key] = job.source
            if job.output.exists() and not args.overwrite:
                tally.skipped += 1
                continue
            started = time.perf_counter()
            try:
                _colorize_one(job, engine, manager, reference, args.format, settings)
            except InputFailed as exc:
                log.error("%s: %s", job.source, exc)
                tally.failed.append(job.source)
            except Exception:
                # A bug, not the file's fault: keep the traceback, but let the batch go on.
                log.exception("%s: unexpected error", job.source)
                tally.failed.append(job.source)
            else:
                tally.done += 1
                tally.seconds += time.perf_counter() - started


def _colorize_one(
    job: Job,
    engine: Engine,
    manager: MemoryManager,
    reference: np.ndarray | None,
    fmt: str,
    settings: Settings,
) -> None:
    image = _read_image(job.source, settings)
    request = ColorizeRequest(image=image, reference=reference)
    try:
        engine.validate(request)
        estimate = engine.estimate(request)
        with manager.reserve(estimate, timeout=settings.admission_wait_s):
            with manager.measure() as measured:
                result = engine.run([request])[0]
            manager.record_estimate(engine.name, estimate, measured.peak_bytes)
    except AdmissionError as exc:
        raise InputFailed(f"not enough memory on {manager.device}: {exc}") from exc
    except (torch.OutOfMemoryError, MemoryError) as exc:
        raise InputFailed(f"out of memory on {manager.device} despite the reservation") from exc
    except EngineError as exc:
        raise InputFailed(str(exc)) from exc
    finally:
        # As the worker does after every job: hand cached blocks back, collect if above the mark.
        manager.clear_cache()
        manager.trigger_gc_if_needed()
    _write(job.output, encode_image(result, fmt))


def _read_image(path: Path, settings: Settings) -> np.ndarray:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputFailed(f"cannot read: {exc.strerror or exc}") from exc
    try:
        return decode_image(
            data, allowed_formats=settings.allowed_formats, max_pixels=settings.max_pixels
        )
    except ImageError as exc:
        raise InputFailed(exc.message) from exc


def _write(path: Path, data: bytes) -> None:
    """Write through a temporary name, so an interrupted run never leaves a half file to skip."""
    partial = path.with_name(f".{path.name}.partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial.write_bytes(data)
        os.replace(partial, path)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise InputFailed(f"cannot write {path}: {exc.strerror or exc}") from exc


def _fail(code: int, message: str) -> int:
    # Written directly, not logged: the message must reach the user whatever logging is set to.
    line = " ".join(message.split())
    sys.stderr.write(f"colorize-service colorize: error: {line}\n")
    return code
