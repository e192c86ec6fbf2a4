"""Keeping credentials out of URLs that are shown.

A registry URL may carry credentials (``https://user:secret@host``). The
password never leaves this module in a URL meant for people: settings reprs,
JSON dumps, log lines and error messages use `mask_url`, and clients get the
credentials separately (`split_credentials`), so that no library error
message can quote them either.
"""

from __future__ import annotations

import base64
from urllib.parse import unquote, urlsplit, urlunsplit

__all__ = ["MASK", "basic_auth", "mask_url", "split_credentials"]

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
    parts = urlsplit(url)
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


def basic_auth(credentials: tuple[str, str]) -> str:
    """The ``Authorization`` header value of HTTP basic authentication."""
    user, password = credentials
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return f"Basic {token}"
