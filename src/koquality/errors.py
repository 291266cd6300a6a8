"""User-facing errors.

A `KoqualityError` is a problem with the user's input or set-up (a missing file, a field that is not there,
an extra that is not installed). The CLI prints its message on one line and exits with code 2, without a
traceback; anything else escaping the library is a bug and keeps its traceback.
"""


class KoqualityError(Exception):
    """An error whose message is meant for the person running koquality."""


def missing_extra(what: str, extra: str = "hf") -> KoqualityError:
    return KoqualityError(f"{what} needs the optional dependencies: pip install 'koquality[{extra}]'")


MAX_SEED = 2**31 - 1  # numpy, sklearn and faiss all take seeds in this range


def check_range(name: str, value, low=None, high=None) -> None:
    """Numbers at the door: `--dims 0` or `seed: -1` stop here in one line, not deep inside a stage."""
    if isinstance(value, bool) or (low is not None and value < low) or (high is not None and value > high):
        bounds = f"at least {low}" if high is None else f"between {low} and {high:,}"
        raise KoqualityError(f"{name} {value}: expected a number {bounds}")
