"""Tests of the Kafka-free managers and of the mock's assertion helpers.

`NoopEventManager` and `MockEventManager` are products of their own: the
first for services with events disabled, the second for services' test
suites. Neither touches Kafka, but both must refuse the same models and
payloads as the Kafka manager, so a mistake shows up in a service's tests
rather than in production.
"""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from structlog.testing import capture_logs

from otel_kafka_events import (
    ANY,
    NOT_NONE,
    BaseAssertionError,
    DuplicateEventError,
    EventManager,
    EventManagerUninitializedError,
    EventMetadata,
    EventPayload,
    MockEventManager,
    MockEventPublisher,
    NoopEventManager,
    NoopEventPublisher,
    NotPublishedConsecutivelyError,
    NotPublishedError,
    PublishedCountError,
    PublishedList,
    PublishedTooFewError,
    TelemetryOptions,
    UnsupportedAvroSchemaError,
)
from otel_kafka_events.errors import (
    EventManagerClosedError,
    EventPayloadError,
    InvalidEventNameError,
)

PREFIX = "test.events"


class Flavour(enum.StrEnum):
    """An enum field, dumped as its value."""

    SWEET = "sweet"
    SOUR = "sour"


class Tasted(EventPayload):
    """The payload used by most tests here."""

    who: str
    flavour: Flavour
    count: int = 1
    when: dt.datetime | None = None


class Broken(EventPayload):
    """A payload model no manager may accept."""

    pair: tuple[int, int]
    keyed: dict[int, str]


ManagerKind = type[NoopEventManager] | type[MockEventManager]
MANAGER_KINDS: list[ManagerKind] = [NoopEventManager, MockEventManager]


async def started(kind: ManagerKind, **options: Any) -> EventManager:
    """An initialized manager of ``kind`` for a unique application."""
    manager = kind(f"app_{uuid.uuid4().hex[:8]}", PREFIX, **options)
    await manager.initialize()
    return manager


async def mock_publisher() -> MockEventPublisher[Tasted]:
    """A mock publisher of `Tasted` events."""
    manager = MockEventManager("taster", PREFIX)
    await manager.initialize()
    return await manager.create_publisher("tasted", Tasted)


# -- Both managers: no Kafka, same checks ---------------------------------------


@pytest.mark.parametrize("kind", MANAGER_KINDS)
async def test_publishes_without_kafka(kind: ManagerKind) -> None:
    manager = await started(kind)
    assert manager.topic == f"{PREFIX}.{manager.application}"
    publisher = await manager.create_publisher("tasted", Tasted)
    expected_class = (
        MockEventPublisher if kind is MockEventManager else NoopEventPublisher
    )
    assert type(publisher) is expected_class
    before = dt.datetime.now(dt.UTC)
    event = await publisher.publish(Tasted(who="ann", flavour=Flavour.SOUR))
    after = dt.datetime.now(dt.UTC)

    # The enriched event: payload fields plus filled metadata.
    assert isinstance(event, Tasted)
    assert isinstance(event, EventMetadata)
    assert isinstance(event, publisher.event_class)
    assert (event.who, event.flavour, event.count) == ("ann", Flavour.SOUR, 1)
    assert isinstance(event.id, uuid.UUID)
    assert event.id.version == 4
    assert event.application == manager.application
    assert event.timestamp.tzinfo is not None
    margin = dt.timedelta(microseconds=1)  # float seconds, rounded to µs
    assert before - margin <= event.timestamp <= after + margin
    assert abs(event.timestamp.timestamp() * 1e9 - event.timestamp_ns) < 1e4
    dumped = event.model_dump()
    assert list(dumped)[:4] == ["id", "application", "timestamp", "timestamp_ns"]
    assert (dumped["trace_id"], dumped["span_id"], dumped["trace_flags"]) == (
        None,
        None,
        None,
    )
    assert await manager.aclose() == 0


@pytest.mark.parametrize("kind", MANAGER_KINDS)
async def test_events_carry_the_trace_context(kind: ManagerKind) -> None:
    manager = await started(kind)
    publisher = await manager.create_publisher("tasted", Tasted)
    context = SpanContext(
        trace_id=0x4BF92F3577B34DA6A3CE929D0E0E4736,
        span_id=0x00F067AA0BA902B7,
        is_remote=False,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )
    with trace.use_span(NonRecordingSpan(context)):
        event = await publisher.publish(Tasted(who="bo", flavour=Flavour.SWEET))
    dumped = event.model_dump()
    assert dumped["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert dumped["span_id"] == "00f067aa0ba902b7"
    assert dumped["trace_flags"] == 1


@pytest.mark.parametrize("kind", MANAGER_KINDS)
async def test_trace_context_can_be_turned_off(kind: ManagerKind) -> None:
    manager = await started(kind, telemetry=TelemetryOptions(trace_context=False))
    publisher = await manager.create_publisher("tasted", Tasted)
    event = await publisher.publish(Tasted(who="cy", flavour=Flavour.SWEET))
    assert "trace_id" not in event.model_dump()
    assert "trace_id" not in [f["name"] for f in publisher.avro_schema["fields"]]


@pytest.mark.parametrize("kind", MANAGER_KINDS)
async def test_unsupported_model_refused(kind: ManagerKind) -> None:
    manager = await started(kind)
    with pytest.raises(UnsupportedAvroSchemaError) as caught:
        await manager.create_publisher("broken", Broken)
    assert [p.split(":")[0] for p in caught.value.problems] == ["pair", "keyed"]


@pytest.mark.parametrize("kind", MANAGER_KINDS)
async def test_flat_payloads_option(kind: ManagerKind) -> None:
    class Listy(EventPayload):
        items: list[str]

    manager = await started(kind, flat_payloads=True)
    with pytest.raises(UnsupportedAvroSchemaError, match="items: only scalar"):
        await manager.create_publisher("listy", Listy)


@pytest.mark.parametrize("kind", MANAGER_KINDS)
async def test_metadata_collision_refused(kind: ManagerKind) -> None:
    class Clash(EventPayload):
        timestamp: str

    manager = await started(kind)
    with pytest.raises(UnsupportedAvroSchemaError, match="timestamp: payload field"):
        await manager.create_publisher("clash", Clash)


@pytest.mark.parametrize("kind", MANAGER_KINDS)
async def test_bad_names_refused(kind: ManagerKind) -> None:
    manager = await started(kind)
    with pytest.raises(InvalidEventNameError, match="'bad-name'"):
        await manager.create_publisher("bad-name", Tasted)
    hyphenated = kind("my-app", PREFIX)
    await hyphenated.initialize()
    with pytest.raises(InvalidEventNameError, match="'my-app'"):
        await hyphenated.create_publisher("tasted", Tasted)


@pytest.mark.parametrize("kind", MANAGER_KINDS)
async def test_lifecycle_errors(kind: ManagerKind) -> None:
    manager = kind("app", PREFIX)
    with pytest.raises(EventManagerUninitializedError):
        await manager.create_publisher("tasted", Tasted)
    await manager.initialize()
    await manager.create_publisher("tasted", Tasted)
    with pytest.raises(DuplicateEventError, match="'tasted'"):
        await manager.create_publisher("tasted", Tasted)
    await manager.aclose()
    with pytest.raises(EventManagerClosedError):
        await manager.create_publisher("other", Tasted)


@pytest.mark.parametrize("kind", MANAGER_KINDS)
async def test_bad_payloads_refused_at_publish(kind: ManagerKind) -> None:
    manager = await started(kind)
    publisher = await manager.create_publisher("tasted", Tasted)
    naive = Tasted(who="d", flavour=Flavour.SOUR, when=dt.datetime(2024, 1, 1))
    with pytest.raises(EventPayloadError, match="'when': naive datetime"):
        await publisher.publish(naive)
    outside = Tasted.model_construct(who="d", flavour="bitter")  # type: ignore[arg-type]
    with pytest.raises(EventPayloadError, match="'flavour'"):
        await publisher.publish(outside)
    with pytest.raises(EventPayloadError, match="must be a Tasted"):
        await publisher.publish(Broken(pair=(1, 2), keyed={}))  # type: ignore[arg-type]
    if isinstance(publisher, MockEventPublisher):
        # Refused payloads are not recorded.
        assert publisher.published == []


async def test_noop_logs_the_event_at_debug() -> None:
    manager = NoopEventManager("logger_app", PREFIX)
    await manager.initialize()
    publisher = await manager.create_publisher("tasted", Tasted)
    with capture_logs() as logs:
        event = await publisher.publish(Tasted(who="e", flavour=Flavour.SWEET))
    (entry,) = [e for e in logs if e["event"] == "Would have published event"]
    assert entry["log_level"] == "debug"
    assert entry["event_name"] == "tasted"
    assert entry["metrics_event"]["id"] == str(event.id)
    assert entry["metrics_event"]["who"] == "e"


# -- The mock's record of published payloads ------------------------------------


async def test_mock_records_payloads_in_order() -> None:
    publisher = await mock_publisher()
    payloads = [Tasted(who=str(n), flavour=Flavour.SWEET, count=n) for n in range(3)]
    for payload in payloads:
        await publisher.publish(payload)
    assert isinstance(publisher.published, PublishedList)
    assert list(publisher.published) == payloads
    # The payloads themselves, not the enriched events.
    assert all(type(p) is Tasted for p in publisher.published)


async def test_mock_publishers_keep_separate_records() -> None:
    manager = MockEventManager("two_types", PREFIX)
    await manager.initialize()
    first = await manager.create_publisher("first", Tasted)
    second = await manager.create_publisher("second", Tasted)
    await first.publish(Tasted(who="1", flavour=Flavour.SOUR))
    assert len(first.published) == 1
    assert len(second.published) == 0


# -- assert_published / assert_published_all ------------------------------------


def dumped(who: str, flavour: str = "sweet", count: int = 1) -> dict[str, Any]:
    """What `Tasted.model_dump(mode="json")` gives for these values."""
    return {"who": who, "flavour": flavour, "count": count, "when": None}


async def published_abc() -> PublishedList[Tasted]:
    """A mock record of three payloads: a, b, c."""
    publisher = await mock_publisher()
    for who in "abc":
        await publisher.publish(Tasted(who=who, flavour=Flavour.SWEET))
    return publisher.published


async def test_assert_published_passes() -> None:
    published = await published_abc()
    published.assert_published([dumped("a"), dumped("b"), dumped("c")])
    published.assert_published([dumped("b"), dumped("c")])
    published.assert_published([dumped("b")])
    published.assert_published([])
    published.assert_published([dumped("c"), dumped("a")], any_order=True)
    published.assert_published_all([dumped("a"), dumped("b"), dumped("c")])
    published.assert_published_all(
        [dumped("c"), dumped("a"), dumped("b")], any_order=True
    )


async def test_any_and_not_none() -> None:
    publisher = await mock_publisher()
    when = dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    await publisher.publish(Tasted(who="a", flavour=Flavour.SOUR, when=when))
    await publisher.publish(Tasted(who="b", flavour=Flavour.SWEET))
    published = publisher.published
    published.assert_published_all(
        [
            {"who": "a", "flavour": "sour", "count": 1, "when": NOT_NONE},
            {"who": ANY, "flavour": ANY, "count": ANY, "when": None},
        ]
    )
    published.assert_published(
        [{"who": "a", "flavour": "sour", "count": 1, "when": "2024-01-02T03:04:05Z"}]
    )
    # NOT_NONE refuses None where ANY accepts it.
    published.assert_published([{"who": "b", "flavour": ANY, "count": 1, "when": ANY}])
    with pytest.raises(NotPublishedError):
        published.assert_published(
            [{"who": "b", "flavour": ANY, "count": 1, "when": NOT_NONE}]
        )
    assert repr(NOT_NONE) == "<NOT_NONE>"


def assert_message_shows(error: BaseAssertionError) -> None:
    """The message must show both the expected and the actual payloads."""
    message = str(error)
    assert "Expected:" in message
    assert "Actual:" in message
    assert message.index("Expected:") < message.index("Actual:")
    for item in error.expected:
        assert repr(item["who"]) in message.split("Actual:")[0]
    for item in error.actual:
        assert repr(item["who"]) in message.split("Actual:")[1]


async def test_too_few_published() -> None:
    published = await published_abc()
    expected = [dumped(w) for w in "abcd"]
    with pytest.raises(PublishedTooFewError) as caught:
        published.assert_published(expected)
    assert caught.value.expected == expected
    assert caught.value.actual == [dumped(w) for w in "abc"]
    assert "Expected more events than were published" in str(caught.value)
    assert_message_shows(caught.value)


async def test_not_published() -> None:
    published = await published_abc()
    expected = [dumped("a"), dumped("z"), dumped("b", count=2)]
    for any_order in (False, True):
        with pytest.raises(NotPublishedError) as caught:
            published.assert_published(expected, any_order=any_order)
        assert caught.value.not_found == [dumped("z"), dumped("b", count=2)]
        message = str(caught.value)
        assert "Some expected events were not published" in message
        assert "Missing:" in message
        assert_message_shows(caught.value)


async def test_not_published_consecutively() -> None:
    published = await published_abc()
    for expected in (
        [dumped("a"), dumped("c")],  # a gap
        [dumped("b"), dumped("a")],  # wrong order
    ):
        with pytest.raises(NotPublishedConsecutivelyError) as caught:
            published.assert_published(expected)
        assert "not published consecutively" in str(caught.value)
        assert_message_shows(caught.value)
        # The same expectation holds when order does not matter.
        published.assert_published(expected, any_order=True)


async def test_duplicates_must_all_be_published() -> None:
    published = await published_abc()
    with pytest.raises(NotPublishedError) as caught:
        published.assert_published([dumped("a"), dumped("a")], any_order=True)
    assert caught.value.not_found == [dumped("a")]


async def test_published_all_counts() -> None:
    published = await published_abc()
    for expected in ([dumped("a"), dumped("b")], [dumped(w) for w in "abcd"]):
        with pytest.raises(PublishedCountError) as caught:
            published.assert_published_all(expected)
        assert "different number of events" in str(caught.value)
        assert_message_shows(caught.value)
        with pytest.raises(PublishedCountError):
            published.assert_published_all(expected, any_order=True)


async def test_published_all_checks_order_and_content() -> None:
    published = await published_abc()
    with pytest.raises(NotPublishedConsecutivelyError):
        published.assert_published_all([dumped("c"), dumped("b"), dumped("a")])
    with pytest.raises(NotPublishedError):
        published.assert_published_all(
            [dumped("a"), dumped("b"), dumped("x")], any_order=True
        )


@pytest.mark.parametrize(
    "error",
    [
        PublishedTooFewError,
        PublishedCountError,
        NotPublishedConsecutivelyError,
        NotPublishedError,
    ],
)
def test_assertion_errors_are_assertion_errors(error: type[Exception]) -> None:
    assert issubclass(error, BaseAssertionError)
    assert issubclass(error, AssertionError)


async def test_empty_record() -> None:
    publisher = await mock_publisher()
    publisher.published.assert_published_all([])
    with pytest.raises(PublishedTooFewError):
        publisher.published.assert_published([dumped("a")])
