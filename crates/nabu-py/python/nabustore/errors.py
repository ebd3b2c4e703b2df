"""The exceptions every `nabustore` call raises.

Each is a `NabuError`, and also the built-in exception a Python tool expects for that
failure (`NotFound` is a `FileNotFoundError`, `InvalidArgument` a `ValueError`, `Timeout` a
`TimeoutError`), so fsspec-based tools handle them as they handle any filesystem's. The
message is the client's: what failed and why (which stripes, how many nodes answered).
"""


class NabuError(Exception):
    """Any NabuStore failure."""


class NotFound(NabuError, FileNotFoundError):
    """The key (or namespace) does not exist, or was deleted."""


class InvalidArgument(NabuError, ValueError):
    """The call's arguments are invalid (an empty key, a range past the end, a bad cluster
    file)."""


class Unavailable(NabuError, ConnectionError):
    """Too few nodes answered: a blob has stripes with fewer readable shards than decoding
    needs, or metadata could not be read from enough nodes."""


class Timeout(Unavailable, TimeoutError):
    """A node did not answer in time."""


class NotDurable(Unavailable):
    """A write could not make enough copies durable; nothing became visible."""


class Corrupt(NabuError):
    """Bytes failed verification after every alternative was tried."""


__all__ = [
    "NabuError",
    "NotFound",
    "InvalidArgument",
    "Unavailable",
    "Timeout",
    "NotDurable",
    "Corrupt",
]
