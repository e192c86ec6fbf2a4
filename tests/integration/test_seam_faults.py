"""The seam fault injector against a real broker and registry.

As ``tests/unit/test_seam_faults.py``, but the faults sit one level down,
in code we do not own: aiokafka's producer and admin client (start, stop,
building a batch, sending it, its answer, describing the topic) and httpx
below python-schema-registry-client (errors, hangs, an ingress's HTML
pages, truncated or odd JSON), besides the span and log processors, the
meter provider and the application's callback. What reached the topic is
read back at the end of each run and held against what the manager
reported. Bounded to about a minute.
"""

from __future__ import annotations

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
    OverflowPolicy,
    TelemetryOptions,
)
from otel_kafka_events._encoding._registry import make_registry_client
from otel_kafka_events_devstack import LocalKafkaStack

from ..broker_support import capabilities
from ..conftest import unique_application
from ..seam_faults import (
    AIOKAFKA_SITES,
    EVERY_FAULT,
    OTEL_SITES,
    Bounds,
    FaultyHttpTransport,
    FaultyLogProcessor,
    FaultyMeterProvider,
    FaultySpanProcessor,
    SeamFaults,
    SeamRun,
    Step,
    patch_aiokafka,
    plans,
)
from .test_reliability_delivery import read_all

SITES = {"registry.http": EVERY_FAULT, **AIOKAFKA_SITES, **OTEL_SITES}
BOUNDS = Bounds(delivery_timeout=2.0, block_timeout=0.2, startup=0.5)
EXAMPLES = int(os.environ.get("SEAM_FAULT_EXAMPLES", "8"))


@pytest.fixture
def faults(monkeypatch: pytest.MonkeyPatch) -> SeamFaults:
    """The faults, with aiokafka's methods meeting them for the test."""
    from otel_kafka_events import _kafka

    monkeypatch.setattr(_kafka, "FOREGROUND_LIMIT", BOUNDS.startup)
    faults = SeamFaults()
    patch_aiokafka(monkeypatch, faults)
    return faults


@pytest.mark.filterwarnings("error")
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    overflow=st.sampled_from(list(OverflowPolicy)),
    producer_spans=st.sampled_from([False, "event", "batch"]),
    plan=plans(SITES, max_sleep=0.5, max_close=1.0, max_episodes=3),
)
async def test_seam_faults_keep_every_promise_on_a_real_broker(
    local_kafka_stack: LocalKafkaStack,
    faults: SeamFaults,
    overflow: OverflowPolicy,
    producer_spans: Any,
    plan: list[Step],
) -> None:
    faults.clear()
    application = unique_application()
    topic = f"seams.{application}"
    await local_kafka_stack.create_topic(topic, partitions=2)
    client = make_registry_client(local_kafka_stack.registry_url, timeout=2.0)
    client.client_kwargs["transport"] = FaultyHttpTransport(faults)
    tracer_provider = TracerProvider(shutdown_on_exit=False)
    tracer_provider.add_span_processor(FaultySpanProcessor(faults))
    logger_provider = LoggerProvider(shutdown_on_exit=False)
    logger_provider.add_log_record_processor(FaultyLogProcessor(faults))
    meter_provider = FaultyMeterProvider(faults)

    def make_manager(callback: Any) -> KafkaEventManager:
        return KafkaEventManager(
            application=application,
            topic_prefix="seams",
            bootstrap_servers=local_kafka_stack.bootstrap_servers,
            registry=client,
            enable_idempotence=capabilities().idempotent_producer,
            telemetry=TelemetryOptions(
                producer_spans=producer_spans,
                logs=True,
                tracer_provider=tracer_provider,
                logger_provider=logger_provider,
                meter_provider=meter_provider,
            ),
            delivery_timeout=BOUNDS.delivery_timeout,
            retry_backoff=0.02,
            backoff_interval=0.1,
            close_timeout=1.0,
            buffer=BufferOptions(
                max_events=20, overflow=overflow, block_timeout=BOUNDS.block_timeout
            ),
            on_delivery_error=callback,
        )

    async def written() -> Counter[bytes]:
        records = await read_all(local_kafka_stack.bootstrap_servers, topic)
        return Counter(bytes(record.value) for record in records)

    run = SeamRun(faults, make_manager, written, BOUNDS, eager=False)
    try:
        await run.start()
        for step in plan:
            await run.step(step)
        await run.finish(close_timeout=2.0)
    except AssertionError as exc:
        raise AssertionError("\n".join(run.describe())) from exc
    finally:
        faults.clear()
        await run.abandon()
        meter_provider.shutdown()
