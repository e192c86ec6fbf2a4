"""Assertion helpers for the payloads recorded by `MockEventPublisher`.

These are part of the product: services use them in their own test suites
through `MockEventManager` (``METRICS_MOCK=true``).
"""

from __future__ import annotations

from pprint import pformat
from typing import Any, TypeVar
from unittest.mock import ANY as _MOCK_ANY

from pydantic import BaseModel

from ._encoding._models import json_dump

__all__ = [
    "ANY",
    "NOT_NONE",
    "BaseAssertionError",
    "NotPublishedConsecutivelyError",
    "NotPublishedError",
    "PublishedCountError",
    "PublishedList",
    "PublishedTooFewError",
]

ANY: Any = _MOCK_ANY
"""Compares equal to any value (`unittest.mock.ANY`)."""


class _NotNone:
    """Compares equal to every value except None."""

    def __eq__(self, other: object) -> bool:
        return other is not None

    def __repr__(self) -> str:
        return "<NOT_NONE>"

    __hash__ = object.__hash__


NOT_NONE: Any = _NotNone()
"""Compares equal to any value that is not None."""

P = TypeVar("P", bound=BaseModel)
Dumped = list[dict[str, Any]]


class BaseAssertionError(AssertionError):
    """A published-events assertion failed; shows expected and actual.

    Parameters
    ----------
    expected
        The expected payload dicts.
    actual
        ``model_dump(mode="json")`` of every recorded payload.
    actual_models
        The recorded payloads themselves.
    detail
        More about the mismatch, appended to `errormsg`.

    Attributes
    ----------
    expected
        The expected payload dicts.
    actual
        The recorded payloads, dumped as they were compared.
    actual_models
        The recorded payload models (as in Safir).
    """

    summary = "Published events do not match"

    def __init__(
        self,
        expected: Dumped,
        actual: Dumped,
        actual_models: list[Any] | None = None,
        *,
        detail: str = "",
    ) -> None:
        self.expected = expected
        self.actual = actual
        self.actual_models: list[Any] = list(actual_models or [])
        self._detail = detail
        super().__init__(
            f"{self.errormsg()}\nExpected:\n{pformat(expected)}\n"
            f"Actual:\n{pformat(actual)}\n"
            f"Actual models: {pformat(self.actual_models)}"
        )

    def errormsg(self) -> str:
        """What went wrong, in one line (plus detail); the start of the
        message."""
        return f"{self.summary}\n{self._detail}" if self._detail else self.summary


class PublishedTooFewError(BaseAssertionError):
    """More events were expected than were published."""

    summary = "Expected more events than were published"


class PublishedCountError(BaseAssertionError):
    """The number of published events differs from the number expected."""

    summary = "A different number of events was published than expected"


class NotPublishedConsecutivelyError(BaseAssertionError):
    """Every expected event was published, but not as one ordered run."""

    summary = "Expected events were not published consecutively in this order"


class NotPublishedError(BaseAssertionError):
    """Some expected events were never published.

    Attributes
    ----------
    not_found
        The expected dicts that matched no published payload.
    """

    summary = "Some expected events were not published"

    def __init__(
        self,
        expected: Dumped,
        actual: Dumped,
        not_found: Dumped,
        *,
        actual_models: list[Any] | None = None,
    ) -> None:
        self.not_found = not_found
        super().__init__(
            expected,
            actual,
            actual_models,
            detail=f"Missing:\n{pformat(not_found)}",
        )


class PublishedList(list[P]):
    """The payloads a mock publisher recorded, with assertion helpers.

    Expected items are dicts compared with ``model_dump(mode="json")`` of the
    recorded payloads (``bytes`` that are not UTF-8 as URL-safe base64), so
    `ANY` and `NOT_NONE` can stand in for values that vary between runs.
    """

    def _dumped(self) -> Dumped:
        return [json_dump(payload) for payload in self]

    def assert_published(self, expected: Dumped, *, any_order: bool = False) -> None:
        """Assert that every expected payload was published.

        Parameters
        ----------
        expected
            Expected payload dicts.
        any_order
            If False (the default), the expected payloads must appear as one
            consecutive run in this order; if True, anywhere in any order.

        Raises
        ------
        PublishedTooFewError, NotPublishedError, NotPublishedConsecutivelyError
            Describing the mismatch.
        """
        actual = self._dumped()
        if len(expected) > len(actual):
            raise PublishedTooFewError(expected, actual, list(self))
        remaining = list(actual)
        missing = []
        for item in expected:
            for index, candidate in enumerate(remaining):
                if item == candidate:
                    del remaining[index]
                    break
            else:
                missing.append(item)
        if missing:
            raise NotPublishedError(expected, actual, missing, actual_models=list(self))
        if any_order:
            return
        width = len(expected)
        for start in range(len(actual) - width + 1):
            if actual[start : start + width] == expected:
                return
        raise NotPublishedConsecutivelyError(expected, actual, list(self))

    def assert_published_all(
        self, expected: Dumped, *, any_order: bool = False
    ) -> None:
        """Assert that exactly the expected payloads were published.

        Raises
        ------
        PublishedCountError
            If the counts differ; otherwise as `assert_published`.
        """
        if len(expected) != len(self):
            raise PublishedCountError(expected, self._dumped(), list(self))
        self.assert_published(expected, any_order=any_order)
