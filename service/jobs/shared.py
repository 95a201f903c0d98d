"""/jobs shared by every replica: any replica stores a job (upload bytes in the object store, its
record and queue entry in Redis) and answers for it; whichever replica's budgets admit it runs
it (service/jobs/runner.py). A 202 is answered only once the bytes and the record are stored."""

from __future__ import annotations

from collections.abc import AsyncIterator

from service.jobs.backend import (
    JobFailed,
    JobProgress,
    JobRefused,
    JobView,
    NotFinished,
    ResultBody,
    ResultGone,
    UnknownJob,
)
from service.jobs.options import options_json, video_options_json
from service.jobs.spool import remove
from service.memory import Reservation
from service.outcomes import Failure, Outcome
from service.store import (
    JobKind,
    JobNotFound,
    JobRecord,
    NoResult,
    Progress,
    QueueFull,
    RecordState,
    SharedStore,
    StoreError,
    StoreUnavailable,
)
from service.worker import stages
from service.worker.admission import AdmittedVideo, Upload, VideoUpload
from service.worker.jobs import Job


class SharedJobs:
    """The shared job store, as the API sees it."""

    def __init__(self, store: SharedStore) -> None:
        self.store = store

    async def submit(self, job: Job, upload: Upload) -> JobView:
        job_input = job.input
        assert job_input is not None, "a checked job carries its upload"
        record = JobRecord(
            kind=JobKind.IMAGE,
            model=job.model,
            id=job.id,
            options=options_json(upload.options),
            width=job_input.width,
            height=job_input.height,
            estimate_bytes=job.estimate,
            host_bytes=stages.decode_bytes(job_input),
        )
        try:
            stored = await self.store.queue.submit(record, upload.image, upload.reference)
        except QueueFull as exc:
            raise JobRefused(Failure(Outcome.QUEUE_FULL, str(exc), 5)) from None
        except StoreError as exc:
            raise JobRefused(_unavailable(exc)) from None
        return view_of(stored)

    async def submit_video(
        self, upload: VideoUpload, video: AdmittedVideo, held: Reservation | None
    ) -> JobView:
        if held is not None:
            held.release()  # nothing waits here in memory: the bytes go to the object store
        try:
            size = upload.path.stat().st_size + len(upload.reference or b"")
            bound = self.store.config.max_bytes
            if size > bound:
                raise JobRefused(
                    Failure(
                        Outcome.VIDEO_TOO_LARGE,
                        f"the upload is {size} bytes but the shared queue holds at most {bound} "
                        "bytes of uploads (COLORIZE_SHARED_QUEUE_BYTES)",
                    )
                )
            info = video.info
            record = JobRecord(
                kind=JobKind.VIDEO,
                model=upload.options.model,
                options=video_options_json(upload.options, info.frames),
                width=info.width,
                height=info.height,
                estimate_bytes=video.estimate,
                host_bytes=video.host_bytes,
            )
            try:
                # Streamed from the spool file (in parts when large), never through Redis.
                stored = await self.store.queue.submit(record, upload.path, upload.reference)
            except QueueFull as exc:
                raise JobRefused(Failure(Outcome.QUEUE_FULL, str(exc), 5)) from None
            except StoreError as exc:
                raise JobRefused(_unavailable(exc)) from None
        finally:
            remove(upload.path)
        return view_of(stored)

    async def view(self, job_id: str) -> JobView:
        held = self.store.consumer.running.get(job_id)
        if held is not None and held.record.kind is JobKind.IMAGE and not held.cancelled.is_set():
            # While this replica runs an image job, only it moves the record on: a cancel sets
            # `cancelled` as it is heard of (cancel channel, or the heartbeat's check), as does
            # a takeover (found by the heartbeat; the record says running meanwhile too). So a
            # poll that reaches the holder costs no Redis round trip. Videos write progress to
            # Redis: those read it.
            return view_of(held.record)
        return view_of(await self._record(job_id))

    async def result(self, job_id: str) -> ResultBody:
        try:
            reader = await self.store.queue.open_result(job_id)
        except JobNotFound:
            raise UnknownJob(job_id) from None
        except NoResult as exc:
            record = await self._record(job_id)
            if not record.state.finished:
                raise NotFinished(record.state.value) from None
            if record.error is not None:
                raise JobFailed(Failure(record.error.outcome, record.error.detail)) from None
            if record.state is RecordState.CANCELLED:
                raise JobFailed(Failure(Outcome.CANCELLED, "the job was cancelled")) from None
            raise ResultGone(str(exc)) from None
        except StoreError as exc:
            raise JobRefused(_unavailable(exc)) from None
        return ResultBody(reader.content_type, reader.size, chunks=_closing(reader.chunks()))

    async def cancel(self, job_id: str) -> JobView:
        record = await self._record(job_id)
        queue = self.store.queue
        try:
            if record.state.finished:
                await queue.delete(job_id)  # DELETE forgets a finished job: record and objects
                return view_of(record)
            await queue.request_cancel(job_id)
            held = self.store.consumer.running.get(job_id)
            if held is not None:
                held.cancelled.set()  # here before the cancel channel's message: polls see it
        except StoreError as exc:
            raise JobRefused(_unavailable(exc)) from None
        return view_of(await self._record(job_id))

    def health(self) -> list[str]:
        return list(self.store.health().reasons)

    async def _record(self, job_id: str) -> JobRecord:
        try:
            record = await self.store.queue.get(job_id)
        except StoreError as exc:
            raise JobRefused(_unavailable(exc)) from None
        if record is None:
            raise UnknownJob(job_id)
        return record


def view_of(record: JobRecord) -> JobView:
    progress = record.progress
    if record.kind is JobKind.VIDEO:
        frames = record.options.get("frames")
        total = frames if isinstance(frames, int) else None
        if progress is None:
            progress = Progress(0, total)
        if record.state is RecordState.DONE:
            # Progress is written at most once a second: the last batch may not be in it.
            done = max(progress.done, progress.total or 0)
            progress = Progress(done, done, progress.fps, 0.0)
    return JobView(
        id=record.id,
        state=record.state.value,
        model=record.model,
        created=record.created or 0.0,
        kind=record.kind.value,
        timings={k: round(v, 6) for k, v in record.timings.items()},
        failure=Failure(record.error.outcome, record.error.detail) if record.error else None,
        result_available=record.state is RecordState.DONE and record.result_key is not None,
        progress=(
            JobProgress(progress.done, progress.total, progress.fps, progress.eta_s)
            if progress is not None
            else None
        ),
        cancel_requested=record.cancel_requested and not record.state.finished,
    )


def _unavailable(exc: StoreError) -> Failure:
    name = exc.store if isinstance(exc, StoreUnavailable) else "the job store"
    return Failure(
        Outcome.STORE_UNAVAILABLE, f"the shared job store is unavailable ({name}): {exc}", 5
    )


async def _closing(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    # The reader closes its connection when iteration ends, and when a client leaves mid-way.
    async for chunk in chunks:
        yield chunk
