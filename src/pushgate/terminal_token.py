"""``pushgate token``: print a connection token, signed with the gateway's secret.

The secret is read from the environment only (``$PUSHGATE_TOKEN_SECRET``, or the
variable ``--secret-env`` names): given as an argument, any user of the machine
would read it in the process list. Exit status: 0 the token printed, 2 a usage
error (no secret, a short one, a claim the gateway would refuse).
"""

import argparse
import json
import os
import re
from typing import TextIO

from pushgate.security import short_secret
from pushgate.terminal_presence import say
from pushgate.tokens import make_token

SECRET_ENV = "PUSHGATE_TOKEN_SECRET"  # --token-secret's variable: one secret, one place
DEFAULT_TTL = "1h"

TOKEN_EPILOG = f"""\
The token is an HS256 JWT that a gateway started with the same --token-secret
accepts: "sub" is the user (pushes to it with push user), "rooms" are joined on
every connect, "info" is what presence rooms are told of the member. Pass it to
`pushgate listen --token`, to connect(url, token=...) or to the browser client.

examples:
  export {SECRET_ENV}=$(python -c 'import secrets; print(secrets.token_hex(32))')
  pushgate token --sub alice --room news --ttl 1h
  pushgate listen --token "$(pushgate token --sub alice --room news)"
  pushgate token --sub bob --info '{{"name":"Bob"}}' --secret-env MY_APP_SECRET
"""

_TTL = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd]?)")
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_ttl(text: str) -> float:
    """A lifetime: seconds, or a number with s, m, h or d (``90``, ``15m``, ``1h``)."""
    match = _TTL.fullmatch(text.strip().lower())
    if match is None or float(match[1]) <= 0:
        raise argparse.ArgumentTypeError(
            f"not a lifetime above 0 such as 3600, 15m, 1h or 7d: {text!r}"
        )
    return float(match[1]) * _SECONDS[match[2]]


def add_token_parser(
    subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]",
) -> None:
    """Add ``token`` to ``pushgate``'s subparsers."""
    token = subparsers.add_parser(
        "token",
        help="print a connection token (a JWT signed with $PUSHGATE_TOKEN_SECRET)",
        description=f"Print a connection token, signed with the secret in ${SECRET_ENV}\n"
        "(the --token-secret of the gateways that are to accept it).",
        epilog=TOKEN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    token.add_argument("--sub", metavar="UID", help="the user (without it: no user)")
    token.add_argument(
        "--room",
        metavar="ROOM",
        action="append",
        default=[],
        help="a room the connection joins on every connect (repeatable)",
    )
    token.add_argument(
        "--ttl",
        metavar="TIME",
        type=parse_ttl,
        default=parse_ttl(DEFAULT_TTL),
        help=f"how long it is valid: seconds, or with s, m, h or d (default: {DEFAULT_TTL})",
    )
    token.add_argument(
        "--info", metavar="JSON", help='a JSON object presence rooms are told, e.g. {"name":"Al"}'
    )
    token.add_argument("--aud", metavar="AUD", help="the audience, for --token-audience")
    token.add_argument("--iss", metavar="ISS", help="the issuer, for --token-issuer")
    token.add_argument(
        "--secret-env",
        metavar="VAR",
        default=SECRET_ENV,
        help=f"the environment variable that holds the secret (default: {SECRET_ENV})",
    )
    # Taken only to be refused with a line that says where the secret goes instead.
    token.add_argument("--secret", "--token-secret", dest="secret_given", help=argparse.SUPPRESS)
    token.set_defaults(terminal_command="token")


def run_token(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Print the token ``args`` asks for; 2 and one line on ``err`` when it cannot."""
    if args.secret_given is not None:
        say(
            err,
            "a secret on the command line can be read by any user of this machine (ps, "
            f"shell history): put it in ${SECRET_ENV}, or in a variable named by --secret-env",
        )
        return 2
    secret = os.environ.get(args.secret_env, "")
    if not secret:
        say(err, f"${args.secret_env} is not set: it must hold the gateway's --token-secret")
        return 2
    problem = short_secret(secret)
    if problem is not None:
        say(err, f"${args.secret_env} {problem}")
        return 2
    try:
        info = None if args.info is None else json.loads(args.info)
        if info is not None and not isinstance(info, dict):
            raise ValueError(f"--info must be a JSON object, got {args.info}")
        token = make_token(
            secret, args.sub, args.room, args.ttl, info, audience=args.aud, issuer=args.iss
        )
    except json.JSONDecodeError as exc:
        say(err, f"--info is not valid JSON: {exc}")
        return 2
    except ValueError as exc:
        say(err, str(exc))
        return 2
    out.write(token + "\n")
    return 0
