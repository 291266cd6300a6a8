"""User-facing errors.

A `KoqualityError` is a problem with the user's input or set-up (a missing file, a field that is not there,
an extra that is not installed). The CLI prints its message on one line and exits with code 2, without a
traceback; anything else escaping the library is a bug and keeps its traceback.
"""


class KoqualityError(Exception):
    """An error whose message is meant for the person running koquality."""


def missing_extra(what: str, extra: str = "hf") -> KoqualityError:
    return KoqualityError(f"{what} needs the optional dependencies: pip install 'koquality[{extra}]'")
