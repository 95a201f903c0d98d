"""`colorize-service colorize`: colour image and video files and folders on this machine, in one
process.

Each file goes the service's way: admitted by the same function as an upload to the API
(service/worker/admission.py: headers, pixel limit, engine rules, the device's and the host's
budgets), then through the same staged pipeline (service/worker/worker.py), a bounded number
in flight at a time. A video (told by its bytes, like the API tells it) is probed and coloured
by the same job runner as a /jobs video (service/jobs/video_executor.py: `colorize_video` with
its frames through the pipeline's device lanes), one at a time, with a progress bar in frames;
its result is `OUTPUT_DIR/<name>.mp4`.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections import deque
from pathlib import Path

import numpy as np
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from service.cli.colour_video import MEMORY_OUTCOMES, colour_video, why_not_done
from service.cli.inputs import (
    InputFailed,
    Tally,
    Target,
    check_reference,
    claim,
    plan_jobs,
    write_atomically,
)
from service.device import resolve_device
from service.engines.base import (
    ColorizeRequest,
    Engine,
    EngineNotReady,
    InvalidRequest,
)
from service.engines.bootstrap import fetch_missing
from service.engines.catalog import ENGINE_NAMES
from service.engines.registry import create_engine, engine_class, render_limits
from service.imaging.encode import CONTENT_TYPES, encode_image
from service.memory import MemoryManager, heap
from service.memory.host import device_manager, host_manager
from service.outcomes import Failure
from service.settings import Settings, SettingsError, load_settings
from service.worker.admission import Budgets, Upload, admit
from service.worker.jobs import Job, JobState
from service.worker.options import JobOptions
from service.worker.worker import Worker, WorkerUnavailable

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1
"""At least one image failed; the others were written."""
EXIT_USAGE = 2
"""Nothing was attempted: bad arguments or configuration, weights missing, unusable reference."""
EXIT_INTERRUPTED = 130


def add_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Register `colorize`; its handler is `args.handler(args) -> exit code`."""
    parser = subparsers.add_parser(
        "colorize",
        help="colour image or video files or folders into an output folder",
        description=(
            "Colour each INPUT (an image, a video, or a folder walked recursively for both) and "
            "write OUTPUT_DIR/<name>.<format> (videos: OUTPUT_DIR/<name>.mp4); files found in a "
            "folder keep their sub-folder. Existing outputs are skipped unless --overwrite. A "
            "file that fails is reported and the others go on; the exit code is 1 if any failed."
        ),
    )
    parser.add_argument(
        "inputs", nargs="+", type=Path, metavar="INPUT", help="images, videos or folders"
    )
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
    parser.add_argument(
        "--render-size",
        type=int,
        default=None,
        metavar="PX",
        help=(
            "DDColor engines: side of the square the network renders at, a multiple of 32 from "
            "64 to COLORIZE_MAX_RENDER_SIZE (default: COLORIZE_DDCOLOR_RENDER_SIZE)"
        ),
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument(
        "--format",
        choices=sorted(CONTENT_TYPES),
        default="png",
        help="output format of images (png); videos are always MP4",
    )
    parser.add_argument(
        "--no-stabilize",
        dest="stabilize",
        action="store_false",
        help="videos: colour every frame on its own (default: hold each shot's colours steady)",
    )
    parser.set_defaults(handler=colorize_command)
    return parser


def colorize_command(args: argparse.Namespace) -> int:
    """Run `colorize`; a setup problem is one stderr line and exit 2, never a traceback."""
    try:
        settings = load_settings()
    except SettingsError as exc:
        return _fail(EXIT_USAGE, str(exc))
    # Before the stage threads start, so that they share the arenas (service/memory/heap.py).
    heap.tune(settings.malloc_arenas, settings.malloc_mmap_threshold_bytes)
    model: str = args.model or settings.default_model
    takes_reference = engine_class(model).takes_reference
    if takes_reference and args.reference is None:
        return _fail(EXIT_USAGE, f"the {model} model needs --reference IMG (a colour photo)")
    if not takes_reference and args.reference is not None:
        takers = ", ".join(n for n in ENGINE_NAMES if engine_class(n).takes_reference)
        return _fail(EXIT_USAGE, f"--reference is only used by the {takers} model, not {model}")
    try:
        device = resolve_device(args.device or settings.device)
    except (ValueError, RuntimeError) as exc:
        return _fail(EXIT_USAGE, str(exc))
    reference = None
    if args.reference is not None:
        try:
            reference = check_reference(args.reference, settings)
        except InputFailed as exc:
            return _fail(EXIT_USAGE, f"reference {args.reference}: {exc}")
    jobs, missing = plan_jobs(args.inputs, args.output_dir, args.format, settings)
    if not jobs and not missing:
        return _fail(EXIT_USAGE, "no images or videos found in " + ", ".join(map(str, args.inputs)))
    weights_dir: Path = args.weights_dir or settings.weights_dir
    fetch_missing(settings, [model], weights_dir)  # a failure shows as the load error below
    engine = create_engine(model, device, weights_dir, render=render_limits(settings))
    if args.render_size is not None:
        # Checked once here rather than as the same failure for every file.
        try:
            engine.validate(_placeholder_request(args.render_size))
        except InvalidRequest as exc:
            return _fail(EXIT_USAGE, f"--render-size: {exc}")
    try:
        engine.load()
    except EngineNotReady as exc:
        return _fail(EXIT_USAGE, exc.reason)
    try:
        args.output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return _fail(EXIT_USAGE, f"cannot create {args.output_dir}: {exc.strerror or exc}")
    # Made after loading, so the weights count as resident memory, not as any job's.
    manager = device_manager(device, settings.memory_threshold, settings.host_memory_bytes)
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


def _run_jobs(
    jobs: list[Target],
    engine: Engine,
    manager: MemoryManager,
    reference: bytes | None,
    args: argparse.Namespace,
    settings: Settings,
    tally: Tally,
) -> None:
    host = host_manager(manager, settings.memory_threshold, settings.host_memory_bytes)
    worker = Worker({engine.name: engine}, manager, settings, encode_image, host=host)
    options = JobOptions(model=engine.name, output_format=args.format, render_size=args.render_size)
    videos = [target for target in jobs if target.video]
    jobs = [target for target in jobs if not target.video]
    # In flight: enough to keep every stage busy, few enough that none waits past its time limit.
    in_flight = worker.lookahead + worker.batch_max_size + 2 * settings.finish_workers
    pending: deque[tuple[Target, Job]] = deque()
    claimed: dict[Path, Path] = {}
    started = time.perf_counter()
    worker.start()
    try:
        with (
            logging_redirect_tqdm(),
            # disable=None: drawn on a terminal only, so logs and pipes get no carriage returns.
            tqdm(jobs, desc="colorize", unit="img", file=sys.stderr, disable=None) as bar,
        ):
            for target in bar:
                if not claim(target, claimed, args, tally):
                    continue
                while len(pending) >= in_flight:
                    _collect(pending.popleft(), tally)
                try:
                    queued = _submit(target, engine, worker, reference, options, settings)
                except InputFailed as exc:
                    log.error("%s: %s", target.source, exc)
                    tally.failed.append(target.source)
                    continue
                pending.append((target, queued))
            while pending:
                _collect(pending.popleft(), tally)
        tally.seconds = time.perf_counter() - started
        for target in videos:
            if claim(target, claimed, args, tally):
                colour_video(target, engine, worker, reference, args, settings, tally)
    finally:
        for _, queued in pending:
            worker.cancel(queued)
        worker.stop(timeout=settings.shutdown_grace_s)
        if not tally.seconds:
            tally.seconds = time.perf_counter() - started


def _placeholder_request(render_size: int) -> ColorizeRequest:
    """A 1x1 request at `render_size`: what an engine's validate needs to judge the size."""
    return ColorizeRequest(np.zeros((1, 1, 3), dtype=np.uint8), render_size=render_size)


def _submit(
    target: Target,
    engine: Engine,
    worker: Worker,
    reference: bytes | None,
    options: JobOptions,
    settings: Settings,
) -> Job:
    """Read `target`'s file, admit it as the API admits an upload and queue it; InputFailed
    says why not."""
    try:
        data = target.source.read_bytes()
    except OSError as exc:
        raise InputFailed(f"cannot read: {exc.strerror or exc}") from exc
    budgets = Budgets(device=worker.manager, host=worker.host)
    upload = Upload(image=data, options=options, reference=reference)
    # Unlike the API, a file may wait for memory: the batch has no client to answer at once.
    job = admit(upload, {engine.name: engine}, budgets, settings, wait_s=settings.admission_wait_s)
    if isinstance(job, Failure):
        if job.outcome in MEMORY_OUTCOMES:
            raise InputFailed(f"not enough memory on {worker.manager.device}: {job.detail}")
        raise InputFailed(job.detail)
    try:
        worker.submit(job)
    except WorkerUnavailable as exc:
        raise InputFailed(exc.detail) from exc
    return job


def _collect(entry: tuple[Target, Job], tally: Tally) -> None:
    """Wait for a queued image and write its result (or report why there is none)."""
    job, queued = entry  # the file, and its job in the pipeline
    queued.wait()
    result = queued.result
    if queued.state is not JobState.DONE or result is None:
        log.error("%s: %s", job.source, why_not_done(queued.failure))
        tally.failed.append(job.source)
        return
    try:
        write_atomically(job.output, result)
    except InputFailed as exc:
        log.error("%s: %s", job.source, exc)
        tally.failed.append(job.source)
    else:
        tally.done += 1
        tally.images += 1
    finally:
        queued.drop_result("written")


def _fail(code: int, message: str) -> int:
    # Written directly, not logged: the message must reach the user whatever logging is set to.
    line = " ".join(message.split())
    sys.stderr.write(f"colorize-service colorize: error: {line}\n")
    return code
