"""The seam fault injector on the memory transport: every call into code we
do not own (the registry, the transport, span and log processors, the meter
provider, the application's callback) raises each kind of exception, hangs
or returns garbage, in hypothesis-drawn sequences of publishes, waits and
closes; the manager's promises hold after every step (see
``tests/seam_faults.py``)."""

from __future__ import annotations

import importlib.util
import os
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk.trace import TracerProvider

from otel_kafka_events import (
    BufferOptions,
    KafkaEventManager,
    LogExportOptions,
    OverflowPolicy,
    TelemetryOptions,
)
from otel_kafka_events.testing import MemorySchemaRegistry, MemoryTransport

from ..seam_faults import (
    EVERY_FAULT,
    OTEL_SITES,
    TRANSPORT_SITES,
    Bounds,
    Fault,
    FaultyLogProcessor,
    FaultyMeterProvider,
    FaultyRegistry,
    FaultySpanProcessor,
    FaultyTransport,
    Inject,
    SeamFaults,
    SeamRun,
    Step,
    plans,
)

SITES = {"registry": EVERY_FAULT, **TRANSPORT_SITES, **OTEL_SITES}
BOUNDS = Bounds(delivery_timeout=0.3, block_timeout=0.1, startup=0.3)
TOPIC = "events.seams"


# The log export to Kafka needs the otlp-kafka extra, which the lowest
# versions leg of CI does not install.
def _has_log_export() -> bool:
    try:
        return (
            importlib.util.find_spec("opentelemetry.exporter.otlp.proto.common")
            is not None
        )
    except ModuleNotFoundError:
        return False


LOG_MODES = ["off", "sdk"] + (["direct"] if _has_log_export() else [])


@pytest.fixture
def short_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    """The foreground limit of startup calls, shortened for the run."""
    from otel_kafka_events import _kafka

    monkeypatch.setattr(_kafka, "FOREGROUND_LIMIT", BOUNDS.startup)


options = st.fixed_dictionaries(
    {
        "partitions": st.integers(min_value=1, max_value=3),
        "idempotent": st.booleans(),
        "producer_spans": st.sampled_from([False, "event", "batch"]),
        "logs": st.sampled_from(LOG_MODES),
        "overflow": st.sampled_from(list(OverflowPolicy)),
        "metrics": st.one_of(st.none(), st.sampled_from(sorted(Fault, key=str))),
    }
)
before = st.lists(
    st.sampled_from(sorted(SITES)).flatmap(
        lambda site: st.builds(
            Inject, st.just(site), st.sampled_from(sorted(SITES[site], key=str))
        )
    ),
    max_size=2,
)


# A longer run: SEAM_FAULT_EXAMPLES=2000 bash scripts/test unit -k seam
EXAMPLES = int(os.environ.get("SEAM_FAULT_EXAMPLES", "20"))


@pytest.mark.filterwarnings("error")
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    setup=options,
    faults_at_start=before,
    plan=plans(SITES, max_sleep=0.3, max_close=0.4),
)
async def test_seam_faults_keep_every_promise(
    short_limits: None,
    setup: dict[str, Any],
    faults_at_start: list[Inject],
    plan: list[Step],
) -> None:
    faults = SeamFaults()
    memory = MemoryTransport(
        partitions=setup["partitions"], idempotent=setup["idempotent"]
    )
    tracer_provider = TracerProvider(shutdown_on_exit=False)
    tracer_provider.add_span_processor(FaultySpanProcessor(faults))
    logger_provider = LoggerProvider(shutdown_on_exit=False)
    logger_provider.add_log_record_processor(FaultyLogProcessor(faults))
    meter_provider = FaultyMeterProvider(faults)
    if setup["metrics"] is not None:
        faults.inject("metrics", setup["metrics"])
    telemetry = TelemetryOptions(
        producer_spans=setup["producer_spans"],
        logs=setup["logs"] != "off",
        log_export=LogExportOptions(kafka=True, direct=True)
        if setup["logs"] == "direct"
        else None,
        tracer_provider=tracer_provider,
        logger_provider=logger_provider,
        meter_provider=meter_provider,
    )

    def make_manager(callback: Any) -> KafkaEventManager:
        manager = KafkaEventManager(
            application="seams",
            topic_prefix="events",
            transport=FaultyTransport(memory, faults),
            registry=FaultyRegistry(MemorySchemaRegistry(), faults),
            telemetry=telemetry,
            delivery_timeout=BOUNDS.delivery_timeout,
            retry_backoff=0.01,
            backoff_interval=0.05,
            close_timeout=0.5,
            buffer=BufferOptions(
                max_events=12,
                overflow=setup["overflow"],
                block_timeout=BOUNDS.block_timeout,
            ),
            on_delivery_error=callback,
        )
        faults.clear("metrics")
        return manager

    async def written() -> Counter[bytes]:
        return Counter(record.value for record in memory.records_for(TOPIC))

    run = SeamRun(faults, make_manager, written, BOUNDS, eager=True)
    try:
        for inject in faults_at_start:
            await run.step(inject)
        await run.start()
        for step in plan:
            await run.step(step)
        await run.finish(close_timeout=0.5)
    except AssertionError as exc:
        raise AssertionError("\n".join(run.describe())) from exc
    finally:
        faults.clear()
        await run.abandon()
        meter_provider.shutdown()
