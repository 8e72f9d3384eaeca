"""Provenance fields from listings facetrail did not write (manifest rows): checked before they
are stored, so that what the pages and reports show is what it claims to be.

- URLs (``source_url``, ``page_url``) are absolute ``http``/``https`` URLs with a host, without
  spaces or control characters, at most ``MAX_URL`` characters. Nothing else is ever shown as a
  link (``javascript:``, ``data:``, ``file:`` and relative URLs are refused here, and the pages
  check again).
- ``captured_at`` (and a web archive's WARC-Date) is an ISO 8601 date or date and time, or a
  year or month as W3C's profile of it allows, not before the first photograph (1826) and not
  in the future; a time with a UTC offset is stored in UTC (``...Z``), a time without one is
  stored as given.
- ``title`` is at most ``MAX_TITLE`` characters, without control characters (but tabs and
  line breaks) or direction overrides.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from urllib.parse import urlsplit

MAX_URL = 2048
MAX_TITLE = 500
FIRST_PHOTOGRAPH = dt.date(1826, 1, 1)
REDUCED_DATE = re.compile(r"(\d{4})(?:-(\d{2}))?", re.ASCII)
"""A year, or a year and month: the reduced precisions of W3C's date profile (WARC-Date)."""


class FieldError(ValueError):
    """A field's value cannot be stored; the message names the field and says why."""


def web_url(value: object) -> bool:
    """Whether ``value`` may be shown as a link: an absolute http(s) URL with a host."""
    if not isinstance(value, str) or not value or len(value) > MAX_URL:
        return False
    if any(ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf") for ch in value):
        return False
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018  # raises ValueError for a port out of range
        return parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:  # a malformed port or IPv6 literal
        return False


def url(field: str, value: str) -> str:
    if not web_url(value):
        raise FieldError(f"{field} {_show(value)} is not an absolute http(s) URL")
    return value


def capture_time(value: str, now: dt.datetime | None = None, field: str = "captured_at"
                 ) -> str:
    """The ISO 8601 form stored for a capture time; FieldError, naming ``field``, if it is
    not one."""
    when: dt.date | dt.datetime
    try:
        reduced = REDUCED_DATE.fullmatch(value)
        when = (dt.date(int(reduced[1]), int(reduced[2] or 1), 1) if reduced
                else dt.date.fromisoformat(value) if len(value) <= 10
                else dt.datetime.fromisoformat(value.replace("z", "Z")))
    except ValueError:
        raise FieldError(f"{field} {_show(value)} is not an ISO 8601 date or time "
                         "(such as 2024-02-29 or 2024-02-29T13:05:00Z)") from None
    now = now or dt.datetime.now(dt.UTC)
    day = when.date() if isinstance(when, dt.datetime) else when
    if day < FIRST_PHOTOGRAPH or day > (now + dt.timedelta(days=1)).date():
        raise FieldError(f"{field} {_show(value)} is before 1826 or in the future")
    if reduced:
        return value
    if isinstance(when, dt.datetime) and when.tzinfo is not None:
        return when.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    return when.isoformat()


BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
"""Embeddings, overrides and isolates: they reorder what is shown after them."""


def title(value: str) -> str:
    """A title: any text but control characters (tabs and line breaks are kept) and the
    direction controls that reorder text; joiners and marks that scripts need are kept."""
    if len(value) > MAX_TITLE:
        raise FieldError(f"title is {len(value)} characters long (at most {MAX_TITLE})")
    if any((unicodedata.category(ch) == "Cc" and ch not in "\t\n\r") or ch in BIDI_CONTROLS
           for ch in value):
        raise FieldError(f"title {_show(value)} holds control or direction-override characters")
    return value


def _show(value: str) -> str:
    """A value as it may be quoted in an error: escaped, and at most 80 characters."""
    shown = ascii(value[:80])
    return shown if len(value) <= 80 else f"{shown[:-1]}...'"
