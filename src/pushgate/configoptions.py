"""How a setting is declared: ``option(...)`` and ``flag(...)`` make a Config field
that carries its :class:`Option` (default, reading, metavar, help, --help
:class:`Group`, checks, the commands that read it). config.py says the rest."""

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, TypeVar

from pushgate.configchecks import Check, parse_bool
from pushgate.errors import ConfigError

ENV_PREFIX = "PUSHGATE_"
LOG_LEVELS = ("debug", "info", "warning", "error")
# The commands that run a node, and which of them read a setting: `serve` is a gateway
# and a logic API in one process, so it reads every setting; `gateway` and `logic` only
# their own (cli.py shows only those in their --help, and refuses the others).
ROLES = ("serve", "gateway", "logic")
GATEWAY = ("serve", "gateway")
LOGIC = ("serve", "logic")


class Group(Enum):
    """The sections of ``--help``, in the order it shows them."""

    LISTEN = "where to listen"
    PROCESSES = "processes"
    CLUSTER = "cluster (see docs/cluster.md)"
    RECOVERY = "sessions and recovery (see docs/recovery.md)"
    TIMEOUTS = "heartbeat, timeouts and stopping"
    LIMITS = "limits (see docs/security.md)"
    API_CONNECTIONS = "the logic API's connections (see docs/security.md)"
    COMPRESSION_GC = "compression and garbage collection"
    ACCESS = "who may push and connect (see docs/security.md)"
    HOOKS = "webhooks and the connect hook (see docs/webhooks.md, docs/connect-hook.md)"
    OBSERVING = "metrics and logs (see docs/operations.md)"
    TESTING = "testing"


# -- Declaring a setting ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Option:
    """One setting as the command line and the environment show it. A ``flag_only``
    option takes no value on the command line. ``name`` is its Config field's."""

    parse: Callable[[str], Any]
    metavar: str
    help: str
    group: Group
    checks: tuple[Check, ...] = ()
    flag_only: bool = False
    name: str = ""
    # A secret: warned of on the command line (ps shows it), and handed to --workers'
    # children by environment only.
    secret: bool = False
    roles: tuple[str, ...] = ROLES  # the commands that read it (GATEWAY, LOGIC or all)

    @property
    def flag(self) -> str:
        return "--" + _dashed(self.name)

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    def read(self, text: str) -> Any:
        """The value ``text`` stands for; ValueError saying what was expected, in
        words (never the name of the function that read it)."""
        try:
            return self.parse(text)
        except ValueError:
            if self.parse is int:
                raise ValueError(f"not a whole number: {text!r}") from None
            if self.parse is float:
                raise ValueError(f"not a number: {text!r}") from None
            raise

    def check(self, value: object) -> None:
        """Raise ConfigError, naming this option, at the first check ``value`` fails."""
        for check in self.checks:
            problem = check(value)
            if problem is not None:
                raise ConfigError(f"{self.flag} {problem}")


def _dashed(name: str) -> str:
    return name.replace("_", "-")


_OPTION = "pushgate.option"  # the key of a Config field's Option in its metadata
T = TypeVar("T", int, float, str)


def option(
    default: T,
    help: str,
    *,
    metavar: str,
    group: Group,
    parse: Callable[[str], T] | None = None,
    check: Check | tuple[Check, ...] = (),
    secret: bool = False,
    roles: tuple[str, ...] = ROLES,
) -> T:
    """A Config field that is a setting. Its text is read by ``parse``, by default the
    type of ``default`` (so write a float's default as ``10.0``); its value must
    pass ``check`` (one check or several, in order); a ``secret`` should be given by
    environment; ``roles``: the commands that read it."""
    checks = check if isinstance(check, tuple) else (check,)
    declared = Option(
        parse or type(default), metavar, help, group, checks, secret=secret, roles=roles
    )
    return field(default=default, metadata={_OPTION: declared})


def flag(help: str, *, group: Group, roles: tuple[str, ...] = ROLES) -> bool:
    """A Config field that is a yes or no, off unless ``--name`` is given (or its
    environment variable says 1/true/yes/on)."""
    declared = Option(parse_bool, "", help, group, flag_only=True, roles=roles)
    return field(default=False, metadata={_OPTION: declared})
