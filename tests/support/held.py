"""What the service holds once it is idle: nothing but the /jobs results it keeps."""

from __future__ import annotations

from typing import Any

from tests.support.waiting import wait_for


def holds_only_kept_results(svc: Any) -> bool:
    """True when every reserved byte of host and device memory is a kept /jobs result's."""
    kept = svc.store.result_bytes()
    return (
        svc.host.snapshot().reserved_for_jobs == kept
        and (svc.manager is svc.host or svc.manager.snapshot().reserved_for_jobs == 0)
        and svc.worker.queue_depth == 0
        and svc.worker.jobs_running == 0
    )


def wait_until_idle(svc: Any, timeout: float = 5.0) -> None:
    """Wait for the pipeline to let go of everything (finish threads end just after answers)."""
    wait_for(lambda: holds_only_kept_results(svc), timeout=timeout)
