"""The one error type for bad input, so the command line can report it in one line."""


class InputError(Exception):
    """Bad input from a user: a file, a field, a value.

    The message is the whole story in one line, e.g.
    ``answers.csv: row 4, column pvq7: 9 is outside 1..6``.
    The command line prints it and exits with status 2; nothing half-written stays behind.
    """

    def __init__(self, message: str):
        super().__init__(message.replace("\n", " "))


def where(file, field=None, value=None) -> str:
    """Format the 'file: field: value' prefix used by every InputError."""
    parts = [str(file)]
    if field is not None:
        parts.append(str(field))
    text = ": ".join(parts)
    if value is not None:
        text += f": {value!r}"
    return text
