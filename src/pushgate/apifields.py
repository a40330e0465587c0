"""The logic API's request fields: from the query string, then from a form or JSON
body over them; a body that is neither (or JSON labelled a form) refused with a 415
that says what to send."""

from urllib.parse import parse_qsl

from aiohttp import web

from pushgate.wire import decode_json

MAX_FORM_FIELDS = 64


async def read_fields(request: web.Request) -> dict[str, object]:
    """The request's fields: query string, then the body's (form or JSON) over them."""
    fields: dict[str, object] = {}
    for name, value in request.query.items():
        fields.setdefault(name, value)
    if request.body_exists:
        body = await request.read()  # raises 413 past client_max_size
        if body:
            declared = request.headers.get("Content-Type") is not None
            fields.update(_parse_body(request.content_type if declared else None, body))
    return fields


def _parse_body(content_type: str | None, body: bytes) -> dict[str, object]:
    """The fields of a body of ``content_type`` (None: the request named none)."""
    if content_type == "application/json" or (content_type or "").endswith("+json"):
        return _parse_json(body)
    if content_type == "application/x-www-form-urlencoded" and not _looks_like_json(body):
        return _parse_form(body)
    if _looks_like_json(body):
        # `curl -d '{"val":...}'` labels JSON as a form: read as one, its fields would
        # be missing ("tag is required"), which says nothing of the real mistake.
        said = "has no Content-Type" if content_type is None else f"says {content_type}"
        raise web.HTTPUnsupportedMediaType(
            text=f"the body looks like JSON but the request {said}: send "
            "Content-Type: application/json (curl: -H 'Content-Type: application/json')"
        )
    if content_type is None:
        raise web.HTTPUnsupportedMediaType(
            text="the request has a body but no Content-Type: send "
            "application/x-www-form-urlencoded or application/json"
        )
    raise web.HTTPUnsupportedMediaType(
        text=f"unsupported Content-Type {content_type!r}: send "
        "application/x-www-form-urlencoded or application/json"
    )


def _looks_like_json(body: bytes) -> bool:
    """Whether ``body`` starts as a JSON object or array does: a form's first field
    name never starts with { or [."""
    return body.lstrip()[:1] in (b"{", b"[")


def _parse_form(body: bytes) -> dict[str, object]:
    try:
        pairs = parse_qsl(
            body.decode("utf-8"),
            keep_blank_values=True,
            errors="strict",
            max_num_fields=MAX_FORM_FIELDS,
        )
    except UnicodeDecodeError:
        raise _bad_body("the form body is not valid UTF-8") from None
    except ValueError:
        raise _bad_body(f"the form body has more than {MAX_FORM_FIELDS} fields") from None
    fields: dict[str, object] = {}
    for name, value in pairs:
        fields.setdefault(name, value)
    return fields


def _parse_json(body: bytes) -> dict[str, object]:
    try:
        value = decode_json(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise _bad_body("the body is not valid JSON") from None
    if not isinstance(value, dict):
        raise _bad_body("the JSON body must be an object of fields")
    return value


def _bad_body(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=message)
