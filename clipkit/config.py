"""The option layer's base: validated pydantic configs whose fields are also the CLI's options.

Every method's defaults live in one config class (:mod:`clipkit.configs`), and the CLI builds each command's
options from the fields (:mod:`clipkit.cli.factory`): the option ``--top-k`` is the field ``top_k``, its help is
the field's description, and an unset option is simply not passed, so the config's default applies. Nothing here
imports torch: a bad option value is reported before any model loads.

List-valued fields accept a comma-separated string (``"sky,wall"``) as well as a list; ``"none"`` or ``""`` is
the empty list.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from clipkit.errors import UsageError

C = TypeVar("C", bound="MethodConfig")


def option(default: Any = None, help: str = "", *, short: str | None = None, flag: str | None = None,
           cli: bool = True, panel: str | None = None, metavar: str | None = None, **constraints: Any) -> Any:
    """A config field that is also a CLI option.

    ``help`` becomes the option's help (the default is appended by the CLI); ``short`` adds a one-letter alias,
    ``flag`` replaces the derived ``--field-name`` spelling (use sparingly: CLI names = library names), ``cli=False``
    keeps a library-only field off the command line, ``panel`` groups it in ``--help``. ``constraints`` are
    pydantic's (``ge``, ``le``, …).
    """
    extra = {"short": short, "flag": flag, "cli": cli, "panel": panel, "metavar": metavar}
    return Field(default, description=help, json_schema_extra={k: v for k, v in extra.items() if v is not None},
                 **constraints)


def split_list(value: Any) -> Any:
    """``"a,b"`` → ``("a", "b")``; ``"none"``/``""`` → ``()``; lists pass through as tuples (stripped)."""
    if value is None:
        return None
    if isinstance(value, str):
        if value.strip().lower() in ("", "none"):
            return ()
        return tuple(v.strip() for v in value.split(",") if v.strip())
    return tuple(value)


def one_line(exc: ValidationError, prefix: str = "") -> str:
    """pydantic's multi-line report as one line per problem, naming options as the CLI spells them."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"][:1])
        flag = "--" + loc.replace("_", "-")
        message = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            parts.append(f"unknown option {flag}")
        elif err["type"] == "literal_error":
            parts.append(f"{flag} must be one of {err.get('ctx', {}).get('expected', '')}, not {err['input']!r}")
        else:
            parts.append(f"{flag}: {message}" if loc else message)
    return prefix + "; ".join(parts)


class MethodConfig(BaseModel):
    """Base of every method config: unknown names are errors, values are validated at construction."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    @classmethod
    def make(cls: type[C], **options: Any) -> C:
        """The config with ``options`` applied; problems raise one ``UsageError``. (The CLI passes only the
        options the user set; in Python ``None`` is a value, e.g. ``temperature=None`` = the model's own scale.)"""
        try:
            return cls(**options)
        except ValidationError as exc:
            raise UsageError(one_line(exc)) from None

    @classmethod
    def of(cls: type[C], config: C | None = None, **options: Any) -> C:
        """``config`` (default: the defaults) with the config-field ``options`` applied — how predictors and
        evaluations take ``(config=None, **options)``."""
        config = config or cls()
        return config.replace(**options) if options else config

    def replace(self: C, **changes: Any) -> C:
        """A validated copy with ``changes`` applied; fields left at their defaults stay unset
        (``model_fields_set``), so callers can still tell a user's choice from a default."""
        kept = {name: getattr(self, name) for name in self.model_fields_set}
        return type(self).make(**{**kept, **changes})

    @classmethod
    def cli_fields(cls) -> dict[str, Any]:
        """The fields offered on the command line, in declaration order."""
        return {name: f for name, f in cls.model_fields.items()
                if (f.json_schema_extra or {}).get("cli", True)}  # type: ignore[union-attr]
