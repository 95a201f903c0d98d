"""The shared store's metrics: promtool-clean, and saying what the queue and the stores did."""

from __future__ import annotations

import subprocess

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from service.store import SharedStore, StoreUnavailable
from tests.support.servers import free_port
from tests.support.store import ConfigFactory, StoreFactory, eventually, image_record, pull
from tests.support.tools import require

pytestmark = pytest.mark.anyio


def exposition(store: SharedStore) -> str:
    registry = CollectorRegistry()
    registry.register(store.metrics)
    return generate_latest(registry).decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_queue_depth_lag_pending_and_claims_are_exported(open_store: StoreFactory) -> None:
    api = await open_store(consume=False)
    dead, survivor = await open_store(), await open_store()
    for _ in range(3):
        await api.queue.submit(image_record(), b"12345")
    held = await pull(dead)
    await dead.consumer.stop(drop_heartbeat=False)

    async def orphaned() -> bool:
        return held.entry_id in survivor.consumer.orphans

    await eventually(orphaned, timeout_s=5.0)
    claimed = await pull(survivor)  # a dead replica's entries come before new ones
    assert claimed.claimed and claimed.job_id == held.job_id
    await survivor.consumer.housekeeper.run()  # refreshes the queue snapshot now
    got = samples(exposition(survivor))
    assert got[("colorize_shared_queue_jobs", ())] == 3
    assert got[("colorize_shared_queue_bytes", ())] == 15
    assert got[("colorize_shared_pending_entries", ())] == 1
    assert got[("colorize_shared_group_lag", ())] == 2
    assert got[("colorize_shared_claims_total", ())] == 1
    assert got[("colorize_shared_dead_letters_total", ())] == 0
    assert got[("colorize_store_up", (("store", "redis"),))] == 1
    assert got[("colorize_store_up", (("store", "object_store"),))] == 1
    ops = {dict(labels).get("op") for name, labels in got if name.startswith("colorize_store_op")}
    assert {"claim", "heartbeat", "pending", "stats", "head_bucket"} <= ops


async def test_a_failed_call_counts_as_an_error_of_its_store(
    open_store: StoreFactory, make_config: ConfigFactory
) -> None:
    dead = SecretStr(f"redis://127.0.0.1:{free_port()}/0")
    store = await open_store(make_config(redis_url=dead, timeout_s=0.5), consume=False)
    with pytest.raises(StoreUnavailable):
        await store.queue.submit(image_record(), b"x")
    got = samples(exposition(store))
    assert got[("colorize_store_errors_total", (("op", "totals"), ("store", "redis")))] == 1
    assert got[("colorize_store_up", (("store", "redis"),))] == 0


async def test_the_exposition_passes_promtool(open_store: StoreFactory) -> None:
    promtool = require("promtool", "prometheus")
    store = await open_store()
    await store.queue.submit(image_record(), b"x")
    await store.consumer.housekeeper.run()
    text = exposition(store)
    out = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert out.returncode == 0 and out.stdout.strip() == "" and out.stderr.strip() == "", out
    assert all(
        family.name.startswith("colorize_") for family in text_string_to_metric_families(text)
    )
