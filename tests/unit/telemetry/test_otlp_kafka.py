"""`KafkaLogRecordExporter`'s module: the encoder it borrows from the SDK.

The SDK's OTLP exporters encode log records with ``encode_logs`` from a
module of opentelemetry-exporter-otlp-proto-common that has no public name;
the otlp-kafka extra pins that package exactly. Where it is not there, the
import says which extra to install.
"""

from __future__ import annotations

import importlib
import sys

import pytest

# The otlp-kafka extra's packages: not in the lowest versions leg of
# scripts/test-versions, whose OpenTelemetry API predates the extra's pins.
pytest.importorskip("opentelemetry.exporter.otlp.proto.common")

MODULE = "otel_kafka_events._telemetry._otlp_kafka"
ENCODER = "opentelemetry.exporter.otlp.proto.common._log_encoder"


def test_the_encoder_is_the_installed_sdks() -> None:
    encoder = importlib.import_module(ENCODER)
    module = importlib.import_module(MODULE)
    assert module.encode_logs is encoder.encode_logs


def test_without_the_encoder_the_error_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # None in sys.modules makes importing the encoder raise ImportError, as
    # a release that moved it would.
    monkeypatch.setitem(sys.modules, ENCODER, None)
    monkeypatch.delitem(sys.modules, MODULE, raising=False)
    with pytest.raises(ImportError, match=r"otel-kafka-events\[otlp-kafka\]"):
        importlib.import_module(MODULE)
