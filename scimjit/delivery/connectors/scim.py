"""The `scim` connector: provisions into a downstream SCIM 2.0 service provider with its own bearer token.

- create: POST /Users with the mapped profile (`externalId` = the scimjit user id, so the two sides can be
  correlated); a 409 (the user exists: an earlier attempt got through, or someone created it) is resolved by
  a `userName eq` search and reported as `already_exists`. Retrying a create is therefore harmless.
- link: the same search, never a POST.
- update: PUT /Users/{id} with the mapped profile; disable / enable: PATCH `active`; delete: DELETE.
- roles are downstream groups named after the role: grant = PATCH add member, revoke = PATCH remove member
  (the group is created on first grant unless `create_groups = false`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx
import orjson

from scimjit.config import ConfigError
from scimjit.delivery.connectors.base import Call, Outcome, PermanentError, Result, TransientError
from scimjit.delivery.httpclient import LoopClient
from scimjit.entitlement.apps import check_url

SCIM_JSON = "application/scim+json"
USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
DEFAULT_ATTRIBUTES = (
    "userName",
    "name",
    "displayName",
    "nickName",
    "title",
    "userType",
    "preferredLanguage",
    "locale",
    "timezone",
    "emails",
    "phoneNumbers",
)


class ScimConnector:
    def __init__(self, settings: Mapping[str, Any], application: str) -> None:
        where = f"application {application!r}: scim connector"
        unknown = set(settings) - {
            "url",
            "token",
            "timeout",
            "attributes",
            "create_groups",
            "roles_as_groups",
        }
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}")
        url, token = settings.get("url"), settings.get("token")
        if not isinstance(url, str) or not isinstance(token, str) or not token:
            raise ConfigError(
                f"{where} needs `url` (the downstream SCIM base URL) and `token` (or token_env)"
            )
        self.url = check_url(url, f"{where}: url").rstrip("/")
        self.attributes = tuple(settings.get("attributes", DEFAULT_ATTRIBUTES))
        self.create_groups = bool(settings.get("create_groups", True))
        self.roles_as_groups = bool(settings.get("roles_as_groups", True))
        self._client = LoopClient(
            float(settings.get("timeout", 10)),
            headers={"Authorization": f"Bearer {token}", "Accept": SCIM_JSON, "User-Agent": "scimjit-scim/1"},
        )

    def __repr__(self) -> str:
        return f"ScimConnector(url={self.url!r})"

    # --- accounts ---------------------------------------------------------------------------------------

    async def create_account(self, call: Call) -> Result:
        if call.mode == "link":
            found = await self._find_user(call)
            if found is None:
                return Result(Outcome.NOT_FOUND)
            await self._sync_roles(found, call.roles)
            return Result(Outcome.LINKED, found)
        response = await self._request("POST", "/Users", self._profile(call, active=True))
        if response.status_code == 201:
            downstream_id = str(_json(response)["id"])
            outcome = Outcome.CREATED
        elif response.status_code == 409:
            found = await self._find_user(call)
            if found is None:  # conflicts on something else (e.g. another unique attribute)
                raise PermanentError(f"POST /Users: 409 and no user named {call.user.get('userName')!r}")
            downstream_id, outcome = found, Outcome.ALREADY_EXISTS
        else:
            raise _error("POST /Users", response)
        await self._sync_roles(downstream_id, call.roles)
        return Result(outcome, downstream_id)

    async def update_account(self, call: Call) -> Result:
        downstream_id = await self._require_id(call)
        response = await self._request("PUT", f"/Users/{downstream_id}", self._profile(call, active=None))
        if response.status_code != 200:
            raise _error("PUT /Users", response)
        return Result(Outcome.UPDATED, downstream_id)

    async def disable_account(self, call: Call) -> Result:
        return await self._set_active(call, False)

    async def enable_account(self, call: Call) -> Result:
        return await self._set_active(call, True)

    async def delete_account(self, call: Call) -> Result:
        downstream_id = call.downstream_id or await self._find_user(call)
        if downstream_id is None:
            return Result(Outcome.ALREADY_DELETED)
        response = await self._request("DELETE", f"/Users/{downstream_id}")
        if response.status_code == 404:
            return Result(Outcome.ALREADY_DELETED, downstream_id)
        if response.status_code not in (200, 204):
            raise _error("DELETE /Users", response)
        return Result(Outcome.DELETED, downstream_id)

    async def reconcile(self, call: Call) -> Result:
        downstream_id = call.downstream_id or await self._find_user(call)
        if downstream_id is None:
            return Result(Outcome.RECONCILED, None, {"exists": False})
        response = await self._request("GET", f"/Users/{downstream_id}")
        if response.status_code == 404:
            return Result(Outcome.RECONCILED, downstream_id, {"exists": False})
        if response.status_code != 200:
            raise _error("GET /Users", response)
        doc = _json(response)
        details: dict[str, Any] = {
            "exists": True,
            "active": doc.get("active", True),
            "userName": doc.get("userName"),
        }
        groups = doc.get("groups")
        if self.roles_as_groups and isinstance(groups, list):  # roles are groups: report them as roles
            details["roles"] = sorted(
                {str(g["display"]) for g in groups if isinstance(g, dict) and g.get("display")}
            )
        return Result(Outcome.RECONCILED, downstream_id, details)

    # --- roles ------------------------------------------------------------------------------------------

    async def grant(self, call: Call) -> Result:
        downstream_id = await self._require_id(call)
        if call.role is None:
            raise PermanentError("role.grant without a role")
        await self._add_member(call.role, downstream_id)
        return Result(Outcome.GRANTED, downstream_id)

    async def revoke(self, call: Call) -> Result:
        downstream_id = await self._require_id(call)
        if call.role is None:
            raise PermanentError("role.revoke without a role")
        group_id = await self._find_group(call.role)
        if group_id is None or not self.roles_as_groups:
            return Result(Outcome.ALREADY_REVOKED, downstream_id)
        ops = [{"op": "remove", "path": f'members[value eq "{downstream_id}"]'}]
        response = await self._request("PATCH", f"/Groups/{group_id}", _patch(ops))
        if response.status_code in (400, 404) and _scim_type(response) in ("noTarget", None):
            return Result(Outcome.ALREADY_REVOKED, downstream_id)
        if response.status_code not in (200, 204):
            raise _error("PATCH /Groups", response)
        return Result(Outcome.REVOKED, downstream_id)

    async def aclose(self) -> None:
        await self._client.aclose()

    # --- helpers ----------------------------------------------------------------------------------------

    def _profile(self, call: Call, *, active: bool | None) -> dict[str, Any]:
        user = call.user
        doc: dict[str, Any] = {"schemas": [USER_SCHEMA]}
        for attr in self.attributes:
            if attr in user:
                doc[attr] = user[attr]
            if attr.startswith("urn:") and attr in user:
                doc["schemas"].append(attr)
        doc["externalId"] = str(user.get("id", ""))
        doc["active"] = True if active is None else active
        return doc

    async def _set_active(self, call: Call, active: bool) -> Result:
        downstream_id = call.downstream_id or await self._find_user(call)
        outcome = Outcome.ENABLED if active else Outcome.DISABLED
        if downstream_id is None:
            if active:
                raise PermanentError("account.enable: the downstream has no such user")
            return Result(outcome, None, {"missing": True})
        ops = [{"op": "replace", "path": "active", "value": active}]
        response = await self._request("PATCH", f"/Users/{downstream_id}", _patch(ops))
        if response.status_code == 404 and not active:
            return Result(outcome, downstream_id, {"missing": True})
        if response.status_code not in (200, 204):
            raise _error("PATCH /Users", response)
        return Result(outcome, downstream_id)

    async def _require_id(self, call: Call) -> str:
        downstream_id = call.downstream_id or await self._find_user(call)
        if downstream_id is None:
            raise PermanentError(f"the downstream has no user named {call.user.get('userName')!r}")
        return downstream_id

    async def _find_user(self, call: Call) -> str | None:
        user_name = call.user.get("userName")
        if not isinstance(user_name, str):
            return None
        return await self._search("/Users", f"userName eq {_quote(user_name)}")

    async def _find_group(self, name: str) -> str | None:
        return await self._search("/Groups", f"displayName eq {_quote(name)}")

    async def _search(self, path: str, scim_filter: str) -> str | None:
        response = await self._request(
            "GET", path, params={"filter": scim_filter, "attributes": "id", "count": "2"}
        )
        if response.status_code != 200:
            raise _error(f"GET {path}", response)
        resources = _json(response).get("Resources") or []
        if len(resources) > 1:
            raise PermanentError(f"GET {path}?filter={scim_filter}: more than one match")
        return str(resources[0]["id"]) if resources else None

    async def _sync_roles(self, downstream_id: str, roles: list[str]) -> None:
        for role in roles:
            await self._add_member(role, downstream_id)

    async def _add_member(self, role: str, downstream_id: str) -> None:
        if not self.roles_as_groups:
            return
        group_id = await self._find_group(role)
        if group_id is None:
            if not self.create_groups:
                raise PermanentError(f"the downstream has no group {role!r} (create_groups = false)")
            response = await self._request(
                "POST", "/Groups", {"schemas": [GROUP_SCHEMA], "displayName": role, "members": []}
            )
            if response.status_code == 409:
                group_id = await self._find_group(role)
            elif response.status_code == 201:
                group_id = str(_json(response)["id"])
            else:
                raise _error("POST /Groups", response)
            if group_id is None:
                raise TransientError(f"group {role!r} not visible after creation")
        ops = [{"op": "add", "path": "members", "value": [{"value": downstream_id}]}]
        response = await self._request("PATCH", f"/Groups/{group_id}", _patch(ops))
        if response.status_code not in (200, 204):
            raise _error("PATCH /Groups", response)

    async def _request(
        self, method: str, path: str, body: Any = None, params: Mapping[str, str] | None = None
    ) -> httpx.Response:
        headers = {"Content-Type": SCIM_JSON} if body is not None else {}
        content = orjson.dumps(body) if body is not None else None
        try:
            return await self._client.get().request(
                method, self.url + path, content=content, headers=headers, params=params
            )
        except httpx.TimeoutException:
            raise TransientError(f"{method} {path}: timed out") from None
        except httpx.HTTPError as exc:
            raise TransientError(f"{method} {path}: {type(exc).__name__}") from None


def _patch(ops: list[dict[str, Any]]) -> dict[str, Any]:
    return {"schemas": [PATCH_SCHEMA], "Operations": ops}


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        data = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}


def _scim_type(response: httpx.Response) -> str | None:
    value = _json(response).get("scimType")
    return value if isinstance(value, str) else None


def _error(what: str, response: httpx.Response) -> Exception:
    status = response.status_code
    detail = _json(response).get("detail") or response.text[:200]
    if status in (408, 429) or status >= 500:
        retry = response.headers.get("retry-after")
        return TransientError(
            f"{what}: HTTP {status}", retry_after=float(retry) if retry and retry.isdigit() else None
        )
    return PermanentError(f"{what}: HTTP {status}: {detail}")
