"""The bad-sample policy as a webdataset-style handler: ``handler(exn) -> bool``.

A call site that meets bad input (a member that does not decode, a batch the preprocessor or
the encoder rejects, a shard read fault, the class names) asks the handler what to do:
``True`` means record it (a status row, a fault marker, ``classes_error``) and go on; ``False``
or an exception raised by the handler means stop the run. The stage picks the handler once,
from ``[precompute] handler``, and passes it down; nothing below compares policy names.

Handlers are module-level functions, so they pickle into DataLoader workers.
"""

from __future__ import annotations

from collections.abc import Callable

Handler = Callable[[BaseException], bool]


def record_and_continue(exn: BaseException) -> bool:
    """``handler = "record"``: the caller writes a status row (or marker) and goes on."""
    return True


def reraise_exception(exn: BaseException) -> bool:
    """``handler = "raise"``: stop at the first bad sample or shard fault (webdataset's name)."""
    raise exn


HANDLERS: dict[str, Handler] = {"record": record_and_continue, "raise": reraise_exception}


def keep_going(handler: Handler, exn: BaseException) -> None:
    """Return when ``handler`` says go on; raise ``exn`` when it says stop (returns False)."""
    if not handler(exn):
        raise exn
