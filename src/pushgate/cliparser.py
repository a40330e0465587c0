"""argparse as ``pushgate`` uses it: every usage error is one line.

argparse's own way is the whole usage block (two dozen lines for ``serve``) above a
message that may name a Python function (``invalid parse_size value``). Here a usage
error is ``PROG: what is wrong (see PROG --help)`` on stderr, exit status 2, with
"did you mean ...?" for a misspelt command or option (difflib), and an option of
another role named as such (``--api-port`` given to ``pushgate gateway``).

:class:`Parser` is the parser class (subparsers inherit it); :func:`unknown_arguments`
words what ``parse_known_args`` left over.
"""

import argparse
import difflib
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NoReturn

from pushgate.config import OPTIONS, Option

_INVALID_CHOICE = re.compile(r"^argument (.+?): invalid choice: '(.*?)' \(choose from (.*)\)$")


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (see the module docstring)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {_reworded(message)} (see {self.prog} --help)\n")


def _reworded(message: str) -> str:
    """argparse's message, without its "argument" prefix; an unknown choice with the
    closest one offered."""
    choice = _INVALID_CHOICE.match(message)
    if choice is None:
        return message.removeprefix("argument ")
    what, given, listed = choice.groups()
    choices = re.findall(r"'([^']*)'", listed)
    named = "command" if not what.startswith("-") else f"value for {what}"
    return f"unknown {named} {given!r}{_did_you_mean(given, choices, ', '.join(choices))}"


def _did_you_mean(given: str, candidates: Iterable[str], otherwise: str = "") -> str:
    close = difflib.get_close_matches(given, list(candidates), n=1)
    if close:
        return f"; did you mean {close[0]}?"
    return f": it is one of {otherwise}" if otherwise else ""


def argument_type(option: Option) -> Callable[[str], Any]:
    """``option``'s reader for argparse: a value it cannot read is refused in words
    ("not a size in bytes: 'lots'"), never with the name of a function."""

    def read(text: str) -> Any:
        try:
            return option.read(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return read


def unknown_arguments(
    parser: argparse.ArgumentParser, args: argparse.Namespace, extras: Sequence[str]
) -> NoReturn:
    """Refuse what ``parser.parse_known_args`` could not place, in the words of the
    (sub)command that was given it: an option of another role, a misspelt option (with
    the closest), or a stray argument."""
    command = _innermost(parser, args)
    first = next((extra for extra in extras if extra.startswith("-")), extras[0])
    if not first.startswith("-"):
        command.error(f"unexpected argument {first!r}")
    flag = first.split("=", 1)[0]
    role = command.prog.split()[-1]
    elsewhere = _option_of_another_role(flag, role)
    if elsewhere is not None:
        roles = " and ".join(r for r in elsewhere.roles)
        command.error(f"{flag} is not an option of {command.prog}: only {roles} read it")
    known = [name for action in command._actions for name in action.option_strings]
    command.error(f"unknown option {flag}{_did_you_mean(flag, known)}")


def _option_of_another_role(flag: str, role: str) -> Option | None:
    for option in OPTIONS:
        if option.flag == flag and role not in option.roles:
            return option
    return None


def _innermost(
    parser: argparse.ArgumentParser, args: argparse.Namespace
) -> argparse.ArgumentParser:
    """The parser of the (sub)command ``args`` were parsed for: ``pushgate push all``'s
    for ``pushgate push all ...``."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            chosen = action.choices.get(getattr(args, action.dest, None) or "")
            if chosen is not None:
                return _innermost(chosen, args)
    return parser
