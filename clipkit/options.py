"""Turning library keyword options into a method's config dataclass, with one-line usage errors.

Shared by ``detect`` and ``ground`` (both carry background prompts and proposal/region overrides).
"""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any, TypeVar

from clipkit.errors import UsageError

T = TypeVar("T")


def config_from_options(cls: type[T], command: str, options: dict[str, Any]) -> T:
    """``cls()`` with ``options`` applied: unknown names, bad proposal/region overrides -> ``UsageError``.

    A ``background`` given as a string is split on ``;`` into prompts.
    """
    from clipkit.proposals import ProposalConfig
    from clipkit.regions import RegionConfig

    unknown = sorted(set(options) - {f.name for f in fields(cls)})  # type: ignore[arg-type]
    if unknown:
        raise UsageError(f"unknown {command} option(s): {', '.join(unknown)}")
    if isinstance(options.get("background"), str):
        options = {**options, "background": tuple(b.strip() for b in options["background"].split(";") if b.strip())}
    cfg = replace(cls(), **options)  # type: ignore[type-var]
    try:
        replace(ProposalConfig(), **getattr(cfg, "proposals", {}))
        replace(RegionConfig(), **getattr(cfg, "regions", {}))
    except TypeError as e:
        raise UsageError(f"bad proposal/region option: {e}") from None
    return cfg
