"""The composition root's door: :func:`make_gatekeeper` (the handshake checks the
config asks for: Origin, tokens, connection limits) and :func:`make_connect_hook`
(--connect-hook). Part of app.py."""

import logging

from pushgate.config import Config
from pushgate.connecthook import ConnectHook, HookSettings
from pushgate.errors import StartupError
from pushgate.gatekeeper import Gatekeeper
from pushgate.limits import ConnectionLimits
from pushgate.meters import Meters
from pushgate.openfiles import connection_cap
from pushgate.security import OriginPolicy, TokenChecks, TokenVerifier

log = logging.getLogger("pushgate")


def make_gatekeeper(config: Config) -> Gatekeeper:
    """The handshake checks the config asks for. Raises StartupError when the token
    public key cannot be read."""
    tokens = None
    checks = TokenChecks(
        audience=config.token_audience or None,
        issuer=config.token_issuer or None,
        require_exp=config.token_require_exp,
    )
    if config.token_secret:
        tokens = TokenVerifier(secret=config.token_secret, checks=checks)
    elif config.token_public_key:
        try:
            with open(config.token_public_key) as key_file:
                tokens = TokenVerifier(public_key=key_file.read(), checks=checks)
        except OSError as exc:
            raise StartupError(
                f"cannot read --token-public-key {config.token_public_key}: {exc.strerror}"
            ) from None
        except ValueError as exc:
            raise StartupError(f"--token-public-key {config.token_public_key}: {exc}") from None
    return Gatekeeper(
        origins=OriginPolicy(config.origins),
        tokens=tokens,
        require_token=config.require_token,
        limits=ConnectionLimits(
            connection_cap(config),
            config.max_connections_per_ip,
            config.max_connects_per_second,
            config.max_connects_per_second_per_ip,
        ),
        max_rooms_per_conn=config.max_rooms_per_conn,
    )


def make_connect_hook(config: Config, meters: Meters) -> ConnectHook | None:
    """--connect-hook: the back end decides on handshakes without a token (None:
    no hook). Warns when any page may open connections: a hook that authenticates
    by cookie would then let any site act as its visitors (docs/connect-hook.md)."""
    if not config.connect_hook:
        return None
    if "*" in config.origins:
        log.warning(
            "--connect-hook with --allowed-origins *: a page of any site can open a "
            "connection with its visitors' cookies; set --allowed-origins, or have the "
            "hook check the Origin header"
        )
    settings = HookSettings(
        config.connect_hook,
        timeout=config.connect_hook_timeout,
        allow_on_failure=config.connect_hook_failure == "allow",
        max_calls=config.connect_hook_max_calls,
        max_rooms=config.max_rooms_per_conn,
    )
    return ConnectHook(settings, meters)
