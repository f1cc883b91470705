"""Secrets out of every message, record and page amcs writes.

The API key of the ``openai`` backend is sent to the server in an ``Authorization: Bearer ...``
header and never stored by amcs, but a server (or a proxy in front of it) that echoes the request
in an error body would put it into the messages amcs builds from that body: stderr, a failed
problem's ``reason`` in the meta file, and the view page made from it, all files that get shared.
``redact`` removes it from such text, at the HTTP backends' boundary (where server text enters
our messages) and again where messages, records and pages are written.

What it replaces with ``[redacted]``:

- the value of every secret amcs knows of: ones registered with ``remember_secret`` (the backend
  registers the key it read) and the values of the environment variables in ``SECRET_ENV_VARS``,
  so a later ``amcs view`` run redacts the key of its environment too; values shorter than
  ``MIN_SECRET_CHARS`` are left alone (``OPENAI_API_KEY=EMPTY`` is a common placeholder, and
  replacing a short word everywhere would garble the text while hiding nothing);
- the value of an ``Authorization`` / ``Proxy-Authorization`` / ``api-key`` / ``x-api-key``
  header, however it was echoed (``Name: value`` lines, ``'Name': 'value'`` dict reprs, JSON,
  ``name=value`` query strings), keeping the scheme word (``Bearer [redacted]``);
- any ``Bearer <token>``;
- OpenAI-style keys (``sk-`` and 20 or more key characters), known or not;
- the password of ``user:password@`` in a URL.

The rest of the text stays as the server said it, so an error still says what went wrong.
"""

from __future__ import annotations

import logging
import os
import re
import threading

REDACTED = "[redacted]"
SECRET_ENV_VARS = ("OPENAI_API_KEY",)
MIN_SECRET_CHARS = 8

# A token ends at whitespace, a quote, a backslash (JSON escapes), or a separator of the formats
# headers are echoed in (", ; & } ] < >"). A value already redacted is not matched again, so
# redact(redact(x)) == redact(x); the scheme word is possessive (?+) so that "Bearer [redacted]"
# cannot be re-read as the value "Bearer".
_TOKEN = r"(?!\[redacted\])[^\s\"'\\,;&}\]<>]+"
_HEADER_VALUE = re.compile(
    r"(?i)(?<![A-Za-z0-9-])((?:proxy-)?authorization|x-api-key|api[-_]?key)"  # the name
    r"(\s*\\?[\"']?\s*[:=]\s*\\?[\"']?\s*)"  # ': ', "': '", '\\": \\"', '='
    r"((?:(?:bearer|basic|token)\s+)?+)" + _TOKEN
)
_BEARER = re.compile(r"(?i)\b(bearer\s+)" + _TOKEN)
_OPENAI_STYLE_KEY = re.compile(r"(?<![\w-])sk-[A-Za-z0-9_-]{20,}")
_URL_PASSWORD = re.compile(r"(://[^/\s:@\"']+:)(?!\[redacted\])[^/\s@\"']+@")

_remembered: set[str] = set()
_lock = threading.Lock()


def remember_secret(value: str | None) -> None:
    """Redact ``value`` from every message from now on (in this process)."""
    if value and len(value) >= MIN_SECRET_CHARS:
        with _lock:
            _remembered.add(value)


def known_secrets() -> list[str]:
    """The secret values to replace, longest first (a key that contains another goes whole)."""
    values = set(_remembered)
    for name in SECRET_ENV_VARS:
        value = os.environ.get(name, "")
        if len(value) >= MIN_SECRET_CHARS:
            values.add(value)
    return sorted(values, key=len, reverse=True)


def redact(text: str) -> str:
    """``text`` with every secret replaced by ``[redacted]``; see the module docstring."""
    if not text:
        return text
    for value in known_secrets():
        text = text.replace(value, REDACTED)
    text = _HEADER_VALUE.sub(lambda m: m[1] + m[2] + m[3] + REDACTED, text)
    text = _BEARER.sub(lambda m: m[1] + REDACTED, text)
    text = _OPENAI_STYLE_KEY.sub(REDACTED, text)
    return _URL_PASSWORD.sub(lambda m: m[1] + REDACTED + "@", text)


class RedactingFilter(logging.Filter):
    """A logging filter that redacts each record's message (a warning may quote an exception
    whose text came from a server)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


def redact_logging() -> None:
    """Put a RedactingFilter on every handler of the root logger (call after configuring it)."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
