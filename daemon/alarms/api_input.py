"""What the operator API accepts, checked at the boundary: request bodies and query parameters.

Every input error is a 4xx answer with a JSON reason (``{"error": ...}``) naming the field, never
a 500: a body that is not UTF-8 or not JSON, nested too deeply, with a duplicate key, a
non-finite or astronomically large number, an unknown key, a wrong type, or text a database
``text`` column cannot hold (NUL, a lone surrogate) or that is too long. The body models below
are the contract (``daemon/alarms/openapi.py`` describes them); an operator action is applied to the
alarm book only once its body passed them, so the database can never refuse it afterwards.
"""
from __future__ import annotations

import json
import math
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from plantwatch.connectors.storable import text_problem

#: longest operator reason or comment (characters)
REASON_MAX = 2000
#: longest sensor tag in a query
TAG_MAX = 64


class InputError(Exception):
    """A request the API refuses; ``status`` is the HTTP status (4xx)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def _storable(max_chars: int):
    def check(s: str) -> str:
        why = text_problem(s, max_chars)
        if why is not None:
            raise ValueError(why)
        return s
    return AfterValidator(check)


Reason = Annotated[str, _storable(REASON_MAX)]


def _finite(v: float) -> float:
    if not math.isfinite(v):
        raise ValueError("must be a finite number of seconds")
    return v


class _Body(BaseModel):
    # strict: no "5" for 5, no true for 1; unknown keys are errors (a typo must not be ignored)
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    #: why (required for shelve, out of service, return to service and comment)
    reason: Reason = ""


class AckBody(_Body):
    pass


class UnshelveBody(_Body):
    pass


class OutOfServiceBody(_Body):
    pass


class ReturnToServiceBody(_Body):
    pass


class ShelveBody(_Body):
    #: seconds (default alarms.default_shelve, at most alarms.max_shelve)
    duration: Annotated[float, Field(gt=0), AfterValidator(_finite)] | None = None


class CommentBody(_Body):
    #: same as reason
    text: Reason | None = None


#: the body model of each operator action
BODIES: dict[str, type[_Body]] = {"ack": AckBody, "shelve": ShelveBody, "unshelve": UnshelveBody,
                                   "comment": CommentBody, "out_of_service": OutOfServiceBody,
                                   "return_to_service": ReturnToServiceBody}


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise InputError(400, f"body: duplicate key {k[:40]!r}")
        out[k] = v
    return out


def _no_constant(name: str) -> Any:
    raise InputError(400, f"body: {name} is not a JSON number")


def parse_json(raw: bytes) -> Any:
    """The JSON document of a request body, or :class:`InputError` (400) saying what is wrong."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(400, f"body is not UTF-8 (byte {e.start})") from None
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except RecursionError:
        raise InputError(400, "body is nested too deeply") from None
    except ValueError as e:  # JSONDecodeError; an integer of more than 4300 digits
        raise InputError(400, f"body must be JSON: {str(e)[:120]}") from None


def action_body(action: str, raw: bytes) -> _Body:
    """The validated body of an operator action (an empty body is ``{}``)."""
    return _validated(BODIES[action], raw)


def _validated(model: type[_Body], raw: bytes) -> Any:
    doc = parse_json(raw) if raw.strip() else {}
    if not isinstance(doc, dict):
        raise InputError(400, "body must be a JSON object")
    try:
        return model.model_validate(doc)
    except ValidationError as err:
        raise InputError(400, "body: " + "; ".join(_describe(e) for e in err.errors(include_url=False)[:5])) from None
    except RecursionError:  # pydantic walking a deeply nested value of an unknown key
        raise InputError(400, "body is nested too deeply") from None


def _describe(e: dict[str, Any]) -> str:
    where = ".".join(str(x) for x in e["loc"]) or "(body)"
    if e["type"] == "extra_forbidden":
        return f"{where}: unknown key"
    if e["type"] == "missing":
        return f"{where}: missing"
    return f"{where}: {e['msg'].removeprefix('Value error, ')}"


def query_text(value: str | None, name: str, max_chars: int = TAG_MAX) -> str | None:
    """A free-text query parameter that is used in a database query."""
    if value is None or value == "":
        return None
    why = text_problem(value, max_chars)
    if why is not None:
        raise InputError(400, f"{name} {why}")
    return value


#: most alarms one acknowledgement may name (a page of the console is far smaller)
ACK_MANY_MAX = 5000


class AckManyBody(_Body):
    #: the alarms to acknowledge (the selected rows or the visible page) ...
    ids: Annotated[list[Annotated[int, Field(gt=0, le=2**63 - 1)]], Field(max_length=ACK_MANY_MAX)] | None = None
    #: ... or every alarm of this incident
    incident: Annotated[int, Field(gt=0, le=2**63 - 1)] | None = None


def ack_many_body(raw: bytes) -> AckManyBody:
    """The validated body of ``POST /api/alarms/ack``: exactly one of ``ids`` and ``incident``."""
    body = _validated(AckManyBody, raw)
    if (body.ids is None) == (body.incident is None):
        raise InputError(400, "body: give either ids or incident")
    return body
