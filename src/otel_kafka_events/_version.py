"""The package version."""

__version__ = "0.1.0"
"""The version of this otel-kafka-events package."""
