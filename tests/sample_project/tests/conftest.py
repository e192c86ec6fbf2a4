"""The plugin, enabled as a service's suite would."""

pytest_plugins = ["otel_kafka_events.testing.pytest_plugin"]
