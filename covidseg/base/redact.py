"""Secrets never reach a logged value: URLs with credentials are shown as ``user:***@host``.

A parameter (``tune -P storage=postgresql://user:password@host/db``), a tag, a logged dict or
text, an error message, a log line: everything covidseg sends to MLflow, prints or logs passes
through :func:`redact` (base layer: no dependency).
"""

from __future__ import annotations

import logging
import re

# scheme://user:password@host  (the password: anything up to the last @ of the URL)
_URL_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:/@\s]*):"
                              r"(?P<password>[^\s]*)@")
# http(s)://TOKEN@host: a web URL's user part alone is an access token (GitHub, GitLab, …)
_WEB_TOKEN = re.compile(r"(?P<scheme>https?://)(?P<token>[^:/@\s]+)@", re.IGNORECASE)
# the names of secrets: password, token, secret, api_key, access_key, client_secret, X_TOKEN, …
_KEY = (r"\b\w*?(?:password|passwd|pwd|token|secret|api[_-]?key|access[_-]?key|"
        r"private[_-]?key)\b")
# key="value", 'key': 'value', "key": "value" (JSON), key = 'value' — quoted, spaces allowed
_QUOTED = re.compile(rf"(?P<key>[\"']?{_KEY}[\"']?\s*[:=]\s*)(?P<q>[\"'])(?:\\.|(?!(?P=q))[^\\])*"
                     rf"(?P=q)", re.IGNORECASE)
# key=value in query and connection strings, key: value in YAML and log lines (unquoted)
_KEY_VALUE = re.compile(rf"(?P<key>{_KEY}(?:=|\s*:\s+))(?P<value>[^&\s;,'\"}}]+)",
                        re.IGNORECASE)


def redact(value):
    """``value`` with every credential replaced by ``***`` (non-strings are returned as they
    are)."""
    if not isinstance(value, str) or not any(c in value for c in "@=:"):
        return value
    value = _URL_CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:***@", value)
    value = _WEB_TOKEN.sub(lambda m: f"{m['scheme']}***@", value)
    value = _QUOTED.sub(lambda m: f"{m['key']}{m['q']}***{m['q']}", value)
    return _KEY_VALUE.sub(lambda m: f"{m['key']}***", value)


class RedactingFilter(logging.Filter):
    """A logging filter that redacts each record's formatted message."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, ()
        return True


def redact_logging() -> None:
    """Install :class:`RedactingFilter` on every handler of the root logger."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
