"""Keeping credentials out of everything that is shown.

A registry URL may carry credentials (``https://user:secret@host``). The
password never leaves this module in a URL meant for people: settings reprs,
JSON dumps, log lines and error messages use `mask_url`, and clients get the
credentials separately (`split_credentials`), so that no library error
message can quote them either. `hide_secrets` does the same for the values
a validation error quotes: a secret setting's value, or a URL's password.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from pydantic import ValidationError
from pydantic_core import ErrorDetails, InitErrorDetails, PydanticCustomError

__all__ = [
    "MASK",
    "basic_auth",
    "hide_error_inputs",
    "hide_secrets",
    "is_secret_name",
    "mask_url",
    "split_credentials",
]

MASK = "**********"
"""What a hidden secret is shown as (pydantic's `SecretStr` shows the same)."""


def _host_part(netloc: str) -> str:
    return netloc.rpartition("@")[2]


def mask_url(url: str) -> str:
    """``url`` with the password of its user information hidden.

    Parameters
    ----------
    url
        Any URL; one without credentials comes back unchanged.

    Returns
    -------
    str
        The URL with ``user:password@`` shown as ``user:**********@`` (and a
        lone ``token@`` as ``**********@``).

    Examples
    --------
    >>> mask_url("https://alice:s3cret@registry.example.com/api")
    'https://alice:**********@registry.example.com/api'
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        # Not a URL it can read (``http://[::1``): shown only without an "@".
        return MASK if "@" in url else url
    if "@" not in parts.netloc:
        return url
    userinfo = parts.netloc.rpartition("@")[0]
    user, has_password, _ = userinfo.partition(":")
    shown = f"{user}:{MASK}" if has_password else MASK
    return urlunsplit(parts._replace(netloc=f"{shown}@{_host_part(parts.netloc)}"))


def split_credentials(url: str) -> tuple[str, tuple[str, str] | None]:
    """Separate the user information from a URL.

    Returns
    -------
    tuple
        The URL without ``user:password@``, and the (percent-decoded)
        username and password, or None if the URL has none.
    """
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, None
    userinfo = parts.netloc.rpartition("@")[0]
    user, _, password = userinfo.partition(":")
    clean = urlunsplit(parts._replace(netloc=_host_part(parts.netloc)))
    return clean, (unquote(user), unquote(password))


_SECRET_NAME = re.compile(r"password|secret|token|credential", re.IGNORECASE)


def is_secret_name(name: str) -> bool:
    """Whether a setting, field or variable of this name holds a secret
    (``KAFKA_SASL_PASSWORD``, ``saslPassword``, ``registry_password``)."""
    return _SECRET_NAME.search(name) is not None


def hide_secrets(value: Any) -> Any:
    """``value`` as it may be shown: the values of secret-named keys of a
    mapping replaced by `MASK` (at any depth), and URL passwords masked.

    For the input values that a validation error quotes, which can be the
    whole set of settings given, secrets included.

    Examples
    --------
    >>> hide_secrets({"KAFKA_SASL_PASSWORD": "s3cret", "n": "http://u:p@h"})
    {'KAFKA_SASL_PASSWORD': '**********', 'n': 'http://u:**********@h'}
    """
    if isinstance(value, str):
        return mask_url(value)
    if isinstance(value, Mapping):
        return {
            key: MASK
            if is_secret_name(str(key)) and item is not None
            else hide_secrets(item)
            for key, item in value.items()
        }
    if type(value) in (list, tuple):
        return type(value)(hide_secrets(item) for item in value)
    return value


def hide_error_inputs(errors: list[ErrorDetails]) -> list[InitErrorDetails]:
    """pydantic's line errors again, each input value that holds a secret
    (a secret-named setting, a password in a URL) hidden."""
    return [_hidden(error) for error in errors]


def _hidden(error: ErrorDetails) -> InitErrorDetails:
    loc = tuple(error["loc"])
    secret = any(isinstance(part, str) and is_secret_name(part) for part in loc)
    value = MASK if secret else hide_secrets(error.get("input"))
    detail: InitErrorDetails = {"type": error["type"], "loc": loc, "input": value}
    if "ctx" in error:
        detail["ctx"] = error["ctx"]
    try:
        # pydantic's own error type, when it can make it again from its context.
        ValidationError.from_exception_data("check", [detail])
    except (KeyError, TypeError, ValueError):
        # Without a context, pydantic shows the message as it is.
        return {
            "type": PydanticCustomError(error["type"], error["msg"]),
            "loc": loc,
            "input": value,
        }
    return detail


def basic_auth(credentials: tuple[str, str]) -> str:
    """The ``Authorization`` header value of HTTP basic authentication."""
    user, password = credentials
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return f"Basic {token}"
