"""clipkit's small exception hierarchy.

Every error a user can cause is one of these, with a one-line message that names the fix. The CLI maps them to
``Error: <message>`` and the class's ``exit_code`` (tracebacks only with ``CLIPKIT_DEBUG=1``).
"""

from __future__ import annotations


class ClipkitError(Exception):
    """Base class: a failure the user can act on. Exit code 1."""

    exit_code = 1


class UsageError(ClipkitError):
    """Bad labels, option values, template sets or inputs. Exit code 2, like a command-line usage error."""

    exit_code = 2


class ModelError(ClipkitError):
    """Unknown model, missing or unreachable weights, an unsafe or corrupt checkpoint."""


class ImageError(ClipkitError):
    """One input that cannot be read as an image; in folder runs it becomes an error record."""
