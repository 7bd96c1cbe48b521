"""OpenAPI 3.1 description of the operator API (served at /openapi.json; checked in as
docs/openapi.json — ``plantwatch api openapi > docs/openapi.json`` regenerates it, and a test
checks that the two agree)."""
from __future__ import annotations

from typing import Any

from plantwatch.daemon.alarms.api_input import ACK_MANY_MAX, BODIES, REASON_MAX, AckManyBody
from plantwatch.daemon.alarms.lifecycle import ACTIONS

_ERR = {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
_ID = {"type": "integer", "minimum": 0, "maximum": 2**63 - 1}


def _action(action: str) -> dict[str, Any]:
    roles = sorted(ACTIONS[action])
    needs_reason = action in ("shelve", "out_of_service", "return_to_service", "comment")
    text = "; no NUL, no lone surrogate (text a database column can hold)"
    body: dict[str, Any] = {"type": "object", "additionalProperties": False, "properties": {
        "reason": {"type": "string", "maxLength": REASON_MAX,
                   "description": ("why (required)" if needs_reason else "why (optional)") + text}}}
    if action == "comment":
        body["properties"]["text"] = {"type": "string", "maxLength": REASON_MAX, "description": "same as reason" + text}
    if action == "shelve":
        body["properties"]["duration"] = {"type": "number", "exclusiveMinimum": 0,
                                          "description": "seconds, a finite number (default alarms.default_shelve,"
                                                         " at most alarms.max_shelve)"}
    assert set(body["properties"]) == set(BODIES[action].model_fields), action  # the model is the contract
    return {"post": {
        "summary": f"{action.replace('_', ' ')} (roles: {', '.join(roles)})",
        "operationId": f"alarm_{action}",
        "parameters": [{"$ref": "#/components/parameters/AlarmId"}],
        "requestBody": {"required": needs_reason, "content": {"application/json": {"schema": body}}},
        "responses": {"200": {"description": "the alarm after the action was committed",
                              "content": {"application/json": {"schema": {"$ref": "#/components/schemas/AlarmDetail"}}}},
                      "400": {**_ERR, "description": "the body is not a valid request (says which field and why)"},
                      "401": _ERR, "403": _ERR, "404": _ERR,
                      "409": {**_ERR, "description": "not possible in the alarm's current state"},
                      "413": {**_ERR, "description": "body larger than 64 KiB"},
                      "500": {**_ERR, "description": "the database refused to record the action: it is"
                                                     " quarantined in dead_letters (unstorable_alarm_op)"}}}}


def _console_paths() -> dict[str, Any]:
    """The console's own routes (daemon/alarms/console_api.py, console_session.py, console_push.py)."""
    ack_many = {"type": "object", "additionalProperties": False, "properties": {
        "ids": {"type": "array", "items": _ID, "maxItems": ACK_MANY_MAX, "description": "the alarms to acknowledge"},
        "incident": {**_ID, "description": "... or every alarm of this incident"},
        "reason": {"type": "string", "maxLength": REASON_MAX, "description": "why (optional)"}},
        "description": "exactly one of ids and incident"}
    assert set(ack_many["properties"]) == set(AckManyBody.model_fields)  # the model is the contract
    csrf = ("a console session (cookie pw_session) must send its CSRF token in X-CSRF-Token (else 403);"
            " a Bearer token needs none")
    return {
        "/api/session": {
            "post": {"summary": "log the browser in with a token, or a console user's name and password (api.users):"
                                " sets the session cookie (HttpOnly, SameSite=Strict) and answers the CSRF token",
                     "operationId": "session_login", "security": [],
                     "requestBody": {"required": True, "content": {"application/json": {"schema": {"oneOf": [
                         {"type": "object", "properties": {"token": {"type": "string"}}, "required": ["token"]},
                         {"type": "object", "properties": {"name": {"type": "string", "maxLength": 64},
                                                           "password": {"type": "string", "maxLength": 1024}},
                          "required": ["name", "password"]}]}}}},
                     "responses": {"200": {"description": "name, role and csrf"}, "400": _ERR, "401": _ERR,
                                   "429": {**_ERR, "description": "too many failed logins for this name or address;"
                                                                  " try again later"}}},
            "get": {"summary": "the session of the cookie: name, role and its CSRF token", "operationId": "session",
                    "security": [{"session": []}], "responses": {"200": {"description": "ok"}, "401": _ERR}},
            "delete": {"summary": "log out (needs X-CSRF-Token)", "operationId": "session_logout",
                       "security": [{"session": []}],
                       "responses": {"200": {"description": "ok"}, "401": _ERR, "403": _ERR}}},
        "/api/alarms/ack": {"post": {
            "summary": "acknowledge many alarms: the selected rows, the visible page or an incident's alarms (roles:"
                       " operator, engineer, security); one operator action per alarm. " + csrf,
            "operationId": "alarms_ack",
            "requestBody": {"required": True, "content": {"application/json": {"schema": ack_many}}},
            "responses": {"200": {"description": "acked: the ids acknowledged; skipped: [{id, error}]"},
                          "400": _ERR, "401": _ERR, "403": _ERR, "404": {**_ERR, "description": "no such incident"},
                          "500": _ERR}}},
        "/api/console/alarms": {"get": {
            "summary": "the alarm summary: every alarm not normal with the condition that alarmed, value at alarm,"
                       " live value, limit, unit, area and operator position; flood state per position",
            "operationId": "console_alarms", "responses": {"200": {"description": "ok"}, "401": _ERR}}},
        "/api/console/alarms/{id}": {"get": {
            "summary": "one alarm's detail: summary row, life, trend (last 30 min and the alarm's span) with limits,"
                       " detector config, incident", "operationId": "console_alarm",
            "parameters": [{"$ref": "#/components/parameters/AlarmId"}],
            "responses": {"200": {"description": "ok"}, "401": _ERR, "404": _ERR}}},
        "/api/stream": {"get": {
            "summary": "Server-Sent Events: 'alarms' after each alarm change, 'ping' every second otherwise",
            "operationId": "stream",
            "responses": {"200": {"description": "event stream", "content": {"text/event-stream": {}}}, "401": _ERR}}},
    }


def spec() -> dict[str, Any]:
    alarm = {"type": "object", "properties": {
        "id": {"type": "integer"}, "detector_id": {"type": "string"}, "sensor": {"type": "string"},
        "area": {"type": "string"}, "unit": {"type": "string"},
        "state": {"type": "string", "enum": ["normal", "unack", "ack", "rtn_unack", "shelved", "suppressed",
                                             "out_of_service"]},
        "active": {"type": "boolean"}, "condition": {"type": "string"},
        "severity": {"type": "string", "enum": ["low", "medium", "high", "critical"]},
        "priority": {"type": "integer", "minimum": 1, "maximum": 4, "description": "1 = most urgent"},
        "raised_at": {"type": ["number", "null"], "description": "Unix seconds"},
        "cleared_at": {"type": ["number", "null"]}, "acked_at": {"type": ["number", "null"]},
        "acked_by": {"type": ["string", "null"]}, "shelved_until": {"type": ["number", "null"]},
        "shelved_by": {"type": ["string", "null"]}, "oos_by": {"type": ["string", "null"]},
        "suppressed_by": {"type": ["string", "null"]}, "state_reason": {"type": ["string", "null"]},
        "incident_id": {"type": ["integer", "null"]}, "updated_at": {"type": "number"}}}
    paths: dict[str, Any] = {
        "/api/whoami": {"get": {"summary": "the token's name, role and allowed actions", "operationId": "whoami",
                                "responses": {"200": {"description": "ok"}, "401": _ERR}}},
        "/api/alarms": {"get": {
            "summary": "alarms not in state normal, by priority then age (all=true: every alarm)",
            "operationId": "list_alarms",
            "parameters": [{"name": "all", "in": "query", "schema": {"type": "boolean"}}],
            "responses": {"200": {"description": "ok", "content": {"application/json": {"schema": {
                "type": "object", "properties": {"site": {"type": "string"}, "time": {"type": "number"},
                                                 "flood": {"type": "object",
                                                           "additionalProperties": {"type": "boolean"}},
                                                 "alarms": {"type": "array",
                                                            "items": {"$ref": "#/components/schemas/Alarm"}}}}}}},
                "401": _ERR}}},
        "/api/alarms/{id}": {"get": {
            "summary": "one alarm with its changes and operator actions", "operationId": "get_alarm",
            "parameters": [{"$ref": "#/components/parameters/AlarmId"}],
            "responses": {"200": {"description": "ok", "content": {"application/json": {"schema": {
                "$ref": "#/components/schemas/AlarmDetail"}}}}, "401": _ERR, "404": _ERR}}},
        "/api/incidents": {"get": {
            "summary": "recent incidents, newest first", "operationId": "list_incidents",
            "parameters": [
                {"name": "sensor", "in": "query", "required": False, "schema": {"type": "string", "maxLength": 64},
                 "description": "only incidents involving this sensor (tag)"},
                {"name": "event", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 0},
                 "description": "only incidents involving the sensor of this detector event while it lasted"}],
            "responses": {"200": {"description": "ok"}, "400": _ERR, "401": _ERR}}},
        "/api/incidents/{id}": {"get": {
            "summary": "an incident: alarms (cause first), changes, operator actions", "operationId": "get_incident",
            "parameters": [{"$ref": "#/components/parameters/IncidentId"}],
            "responses": {"200": {"description": "ok"}, "401": _ERR, "404": _ERR}}},
        "/api/incidents/{id}/report": {"get": {
            "summary": "self-contained HTML report of an incident", "operationId": "incident_report",
            "parameters": [{"$ref": "#/components/parameters/IncidentId"}],
            "responses": {"200": {"description": "HTML", "content": {"text/html": {}}}, "401": _ERR, "404": _ERR}}},
        "/api/audit/verify": {"get": {
            "summary": "recompute the audit hash chain", "operationId": "audit_verify",
            "responses": {"200": {"description": "verdict"}, "401": _ERR}}},
    }
    for action in ACTIONS:
        paths[f"/api/alarms/{{id}}/{action.replace('_', '-')}"] = _action(action)
    paths.update(_console_paths())
    return {
        "openapi": "3.1.0",
        "info": {"title": "plantwatch operator API", "version": "1",
                 "description": "Alarms (ISA-18.2 states), operator actions, incidents and audit. Authenticate with"
                                " `Authorization: Bearer <token>`; roles: inspector (read), operator (+ ack, shelve,"
                                " unshelve, comment), engineer (+ out of service, return to service). The console"
                                " logs a browser in once (POST /api/session: a session cookie) and sends the"
                                " session's CSRF token with every action."},
        "security": [{"bearer": []}, {"session": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"},
                                "session": {"type": "apiKey", "in": "cookie", "name": "pw_session"}},
            "parameters": {
                # not a decimal number: 400; beyond bigint: 404 (no such row can exist)
                "AlarmId": {"name": "id", "in": "path", "required": True, "schema": _ID},
                "IncidentId": {"name": "id", "in": "path", "required": True, "schema": _ID}},
            "schemas": {
                "Error": {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]},
                "Alarm": alarm,
                "AlarmDetail": {"allOf": [{"$ref": "#/components/schemas/Alarm"}, {"type": "object", "properties": {
                    "changes": {"type": "array", "items": {"type": "object"}},
                    "actions": {"type": "array", "items": {"type": "object"}}}}]}}},
    }
