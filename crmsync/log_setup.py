"""The CLI's logging: one handler on stderr, at the level ``-v``/``-vv`` asks for, whose
every record passes through ``PersonalData`` first.

The filter is the last line of defence: call sites already keep records' content out of
their lines (bodies are summarised, person keys masked), but a vendor's error message or
an exception may still quote an e-mail address or a phone number. A filter on the handler
(not on a logger) sees the records of every logger, third-party ones (httpx) included.
"""

from __future__ import annotations

import logging
import sys

from crmsync.personal import mask_text

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# libraries whose INFO lines say nothing an operator of crmsync asks for with -v
QUIET_BELOW_DEBUG = ("alembic.runtime.plugins", "httpx", "httpcore")


class Masking(logging.Filter):
    """Rewrites a record's message (its arguments merged in), exception text and stack
    through ``mask`` before any handler formats it."""

    def mask(self, text: str) -> str:
        raise NotImplementedError

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a malformed call: show its parts, masked
            message = f"{record.msg} {record.args}"
        masked = self.mask(message)
        if masked != message or record.args:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.mask(record.exc_text)
        if record.stack_info:
            record.stack_info = self.mask(record.stack_info)
        return True


class PersonalData(Masking):
    """Masks e-mail addresses and phone numbers."""

    def mask(self, text: str) -> str:
        return mask_text(text)


def child_logging(level: int) -> None:
    """A child process's logging (readers, profile workers): the parent's level, on the
    same stderr, through the same mask. Without it a child's warning would reach the
    terminal through Python's last-resort handler, unmasked."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(PersonalData())
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level)
    for name in QUIET_BELOW_DEBUG:
        logging.getLogger(name).setLevel(
            max(level, logging.WARNING) if level > logging.DEBUG else logging.NOTSET
        )


def configure(verbose: int) -> logging.Handler | None:
    """Logs to stderr at WARNING, INFO (``-v``) or DEBUG (``-vv``), personal data masked.

    As ``logging.basicConfig`` does, it leaves alone a process whose logging someone else
    set up (a test harness, an application that embeds crmsync); called again, it
    replaces the handler it installed before rather than adding a second one.
    """
    root = logging.getLogger()
    ours = [h for h in root.handlers if any(isinstance(f, PersonalData) for f in h.filters)]
    if len(ours) != len(root.handlers):
        return None
    for old in ours:
        root.removeHandler(old)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(PersonalData())
    root.addHandler(handler)
    root.setLevel(logging.WARNING - 10 * min(verbose, 2))
    for name in QUIET_BELOW_DEBUG:
        logging.getLogger(name).setLevel(logging.WARNING if verbose < 2 else logging.NOTSET)
    return handler
