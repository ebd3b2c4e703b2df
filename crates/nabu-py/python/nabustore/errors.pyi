"""Type stubs of `nabustore.errors`: the exceptions every `nabustore` call raises, each a
`NabuError` and also the built-in exception a Python tool expects for that failure."""

class NabuError(Exception):
    """Any NabuStore failure."""

class NotFound(NabuError, FileNotFoundError):
    """The key (or namespace) does not exist, or was deleted."""

class InvalidArgument(NabuError, ValueError):
    """The call's arguments are invalid."""

class Unavailable(NabuError, ConnectionError):
    """Too few nodes answered."""

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
