"""Shifts from a scheduling system over HTTP: `PUT /jit/v1/schedules/{source}` (scope `schedules`; `admin`
holds it too).

The body is the complete plan of that source, `{"period": {"start", "end"}?, "shifts": [{"id", "user",
"group", "startsAt", "endsAt"}]}`; the answer is the summary `{created, updated, revoked, unchanged,
skipped}`. Idempotent: send the whole plan every few minutes. A plan with any bad shift is refused whole
(400 `invalid_schedule`, `shifts`: [{"id", "error"}]); see scimjit/access/schedules.py and
docs/jit-access.md ("Shifts from a schedule").
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from scimjit.http.apidoc import AUTH_ERRORS, JSON, Json, body, doc, jit_errors, path, ref, resp
from scimjit.http.auth import require
from scimjit.http.body import read_json_object
from scimjit.http.jit.errors import json_response

SCOPE = "schedules"
MAX_BODY = 4 * 1024 * 1024  # room for [jit] schedule_max_shifts (5,000 by default) shifts of ~200 bytes
_TEXT, _WHEN = {"type": "string"}, {"type": "string", "format": "date-time"}
_COUNT = {"type": "integer"}
BODIES: dict[str, Json] = {
    "SchedulePlan": {
        "type": "object",
        "properties": {
            "period": {
                "type": "object",
                "description": "Only grants of this source overlapping the period are revoked when missing",
                "properties": {"start": _WHEN, "end": _WHEN},
                "required": ["start", "end"],
            },
            "shifts": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "id": {**_TEXT, "description": "the scheduling system's shift id"},
                        "user": {**_TEXT, "description": "user id or userName"},
                        "group": {**_TEXT, "description": "group id or displayName"},
                        "startsAt": _WHEN,
                        "endsAt": _WHEN,
                    },
                    "required": ["id", "user", "group", "startsAt", "endsAt"],
                },
            },
        },
        "required": ["shifts"],
    },
    "ScheduleSummary": {
        "type": "object",
        "properties": {
            "created": _COUNT,
            "updated": _COUNT,
            "revoked": _COUNT,
            "unchanged": _COUNT,
            "skipped": {**_COUNT, "description": "shifts already over: no grant made"},
        },
    },
}


@doc(
    "Apply a scheduling system's complete plan of shifts as scheduled grants (scope `schedules`)",
    "Access",
    {
        "200": resp("What changed", ref("ScheduleSummary"), JSON),
        **jit_errors(400, 404, 413, 415, *AUTH_ERRORS),
    },
    params=[path("source")],
    body=body(ref("SchedulePlan"), JSON),
    description="New shifts become grants, changed ones are updated, shifts missing from the plan (within "
    "`period`, if given) are revoked. Sending the same plan again changes nothing. Any bad shift refuses "
    'the whole plan: 400 `invalid_schedule` with `"shifts": [{"id", "error"}]`.',
    components=BODIES,
)
async def schedule_put(request: Request) -> Response:
    principal = require(request, SCOPE)
    plan = await read_json_object(request, MAX_BODY)
    access = request.app.state.services.access
    summary = await access.db.run(
        access.apply_schedule,
        request.path_params["source"],
        plan,
        actor=principal.name,
        http_request_id=request.scope.get("state", {}).get("request_id"),
    )
    return json_response(summary)


routes: list[BaseRoute] = [Route("/schedules/{source}", schedule_put, methods=["PUT"])]
