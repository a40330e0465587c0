"""Which logic API requests a browser was made to send: pure decisions, no I/O.

A keyless logic API trusts whoever can reach its loopback address. A page on any
site its operator visits reaches it anyway, in two ways:

- **Cross-site requests.** The page submits a form to
  ``http://127.0.0.1:8081/push/all`` (a "simple" request: the browser sends it
  without asking first, and the push happens even though the page cannot read the
  answer). The browser names the page's origin in ``Origin`` (on every POST and on
  every CORS request) and, if current, says ``Sec-Fetch-Site: cross-site``: either
  one is refused. A top-level GET navigation to the console page stays allowed, so
  that links to the console work; it changes nothing and the linking page cannot
  read it.
- **DNS rebinding.** A name the attacker controls is answered with 127.0.0.1, so the
  attacker's page reads the API as its own origin: ``Origin`` matches, but ``Host``
  still carries the attacker's name. A keyless API therefore accepts only Host names
  nobody else can point at it: IP literals, ``localhost`` and ``*.localhost``
  (browsers resolve those to loopback themselves, RFC 6761) and the ``--api-host``
  the operator named. With API keys the key protects: a rebinding page does not
  have it.

Programs (the Python SDKs, curl) send neither ``Origin`` nor ``Sec-Fetch-*`` and
always pass the cross-site check. The health probes and the console's public files
are open to every request: they change nothing and reveal nothing.
"""

import ipaddress
import re
from dataclasses import dataclass

from pushgate.security import Refusal

# Answered to anyone: probes name hosts as they please, and /static/ files are
# meant to be imported by pages on other sites (they carry ACAO: *).
OPEN_PATHS = frozenset({"/healthz", "/readyz"})
OPEN_PREFIXES = ("/static/",)
CONSOLE_PATH = "/"
DOCS_PATH = "/docs"  # the API's reference page: followed by links too
SAFE_METHODS = frozenset({"GET", "HEAD"})

_NAME = r"\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+"
_HOST = re.compile(rf"(?P<name>{_NAME})(?::[0-9]{{1,5}})?")
_ORIGIN = re.compile(rf"[A-Za-z][A-Za-z0-9+.-]*://(?P<name>{_NAME})(?::[0-9]{{1,5}})?")


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """What the checks read from a request (header values as sent, None when absent)."""

    method: str
    path: str
    host: str | None = None
    origin: str | None = None
    fetch_site: str | None = None
    fetch_mode: str | None = None


def check_request(facts: RequestFacts, *, keyed: bool, api_host: str = "") -> Refusal | None:
    """None when the request may go on to the API key check and its handler; else a
    403 naming why. ``keyed``: API keys are configured (then the Host is not
    checked); ``api_host``: the --api-host name, accepted as a Host beside the
    names that cannot be rebound."""
    if facts.path in OPEN_PATHS or facts.path.startswith(OPEN_PREFIXES):
        return None
    refusal = None if keyed else rebound_host(facts.host, api_host)
    return refusal or cross_site(facts)


def cross_site(facts: RequestFacts) -> Refusal | None:
    """403 when a browser sent the request from a page of another site: its Origin
    names another host than its Host (or is ``null``), or Sec-Fetch-Site says so."""
    if is_console_navigation(facts):
        return None
    if facts.fetch_site is not None and facts.fetch_site.strip().lower() == "cross-site":
        return _refused(
            "the request comes from a page of another site (Sec-Fetch-Site: cross-site)",
            "cross_site",
        )
    if facts.origin is None:
        return None  # not sent by a page: the SDKs, curl, a navigation
    origin = origin_host_name(facts.origin)
    if origin is None or origin != host_name(facts.host or ""):
        return _refused(
            f"the request comes from a page of another site (Origin {facts.origin!r}, "
            f"Host {facts.host!r}); the logic API is not for browsers on other sites",
            "cross_site",
        )
    return None


def is_console_navigation(facts: RequestFacts) -> bool:
    """A link followed to the console page: a top-level GET that changes nothing."""
    return (
        facts.path in (CONSOLE_PATH, DOCS_PATH)
        and facts.method in SAFE_METHODS
        and (facts.fetch_mode or "").strip().lower() == "navigate"
    )


def rebound_host(host: str | None, api_host: str = "") -> Refusal | None:
    """403 unless ``host`` (a Host header) names this server in a way no one else's
    DNS can: see :func:`cannot_be_rebound`. A request without a Host header passes:
    browsers always send one."""
    if host is None:
        return None
    name = host_name(host)
    if name is None or not cannot_be_rebound(name, api_host):
        return _refused(
            f"Host {host!r} is not an IP address, localhost or the --api-host; "
            "without --api-key the logic API answers those only (DNS rebinding)",
            "host",
        )
    return None


def cannot_be_rebound(name: str, api_host: str = "") -> bool:
    """Whether a host name (lower case, as :func:`host_name` gives it) always means
    this server: an IP literal, ``localhost`` or ``*.localhost``, or the name the
    operator gave --api-host."""
    if name == "localhost" or name.endswith(".localhost"):
        return True
    if api_host and name == _normal(api_host):
        return True
    try:
        ipaddress.ip_address(name.removeprefix("[").removesuffix("]"))
    except ValueError:
        return False
    return True


def host_name(host: str) -> str | None:
    """The name in a Host header (``name``, ``name:port``, ``[v6]:port``), lower case
    and without a trailing dot; None when it is not of that form."""
    match = _HOST.fullmatch(host.strip())
    return _normal(match["name"]) if match else None


def origin_host_name(origin: str) -> str | None:
    """The host name in an Origin header (``scheme://host[:port]``), as
    :func:`host_name` gives it; None for ``null`` or anything else."""
    match = _ORIGIN.fullmatch(origin.strip())
    return _normal(match["name"]) if match else None


def _normal(name: str) -> str:
    return name.lower().rstrip(".")


def _refused(reason: str, kind: str) -> Refusal:
    return Refusal(403, reason, kind)
