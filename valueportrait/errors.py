"""The one error type for bad input, so the command line can report it in one line."""

import re

#: Paths of the SQLite files this process opened, so a database error (disk full, a
#: corrupt file) can name them in its one line.
DATABASES: list[str] = []


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C: cleanup runs, the command exits with status 143."""


#: The longest message printed; a longer one is cut (a value formatted whole into a
#: message must never flood the terminal).
MAX_MESSAGE = 1000


class InputError(Exception):
    """Bad input from a user: a file, a field, a value.

    The message is the whole story in one line, e.g.
    ``answers.csv: row 4, column pvq7: 9 is outside 1..6``.
    The command line prints it and exits with status 2; nothing half-written stays behind.
    """

    def __init__(self, message: str):
        message = " ".join(str(message).split("\n"))
        if len(message) > MAX_MESSAGE:
            message = message[: MAX_MESSAGE - 40] + f"… ({len(message):,} characters in all)"
        super().__init__(message)


def where(file, field=None, value=None) -> str:
    """Format the 'file: field: value' prefix used by every InputError."""
    from valueportrait.files import brief

    parts = [str(file)]
    if field is not None:
        parts.append(str(field))
    text = ": ".join(parts)
    if value is not None:
        text += f": {brief(value)}"
    return text


_SECRETS = (
    (re.compile(r"\b(sk|pk|rk)-(?:[A-Za-z0-9]+-)*[A-Za-z0-9_\-]{8,}"), r"\1-…"),     # OpenAI-style keys
    (re.compile(r"\b(Bearer|Basic|Token)\s+[A-Za-z0-9._~+/=\-]{6,}", re.IGNORECASE), r"\1 …"),
    (re.compile(r"(?i)\b((?:api[_-]?key|access[_-]?token|token|secret|password)\"?\s*[=:]\s*\"?)[^\s\"&,;}]{4,}"), r"\1…"),
)


def redact(text: str, *known: str | None) -> str:
    """`text` with anything that looks like a credential masked (``sk-…``, ``Bearer …``,
    ``api_key=…``), and any of the `known` secret values too.

    Error bodies of HTTP services sometimes echo the key they were sent; they must not
    reach the terminal, the logs or the output files.
    """
    text = str(text)
    for secret in known:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "…")
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text
