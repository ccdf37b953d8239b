"""I1: an initial provisioning cycle as Microsoft Entra ID's provisioning service runs it, end to end.

The requests are those of Entra's SCIM guide ("Tutorial: Develop and plan provisioning for a SCIM endpoint
in Microsoft Entra ID", its request/response examples) and of the captured Entra traffic in
tests/idp_captures/entra:

1. **users**, for each of `--cycle-users` N users, on one connection and in this order:
   `GET /scim/v2/Users?filter=userName+eq+%22<upn>%22` (the match query, form-encoded as Entra sends it:
   spaces as `+`, `"` as `%22`, `@` as `%40`), answered by an empty ListResponse, then `POST /scim/v2/Users`
   with Entra's body (both schemas, externalId = mailNickname, userName = UPN, active, displayName, the
   work email, `meta.resourceType`, name, the enterprise extension's employeeNumber and department, and
   `roles: []`).
2. **groups**, for each of 20 groups, in order on one connection:
   `GET /scim/v2/Groups?excludedAttributes=members&filter=displayName+eq+%22<name>%22` (empty), then
   `POST /scim/v2/Groups` without members ("Groups are created with an empty members list"), with Entra's
   ADSCIM schema URN and externalId = the group's objectId.
3. **members**: one `PATCH /scim/v2/Groups/{id}` per membership, one member each, the guide's
   "Update Group [Add Members]" body (`{"op": "Add", "path": "members", "value": [{"$ref": null,
   "value": "<id>"}]}`). Entra knows the ids from the POST answers; the bench reads them from the database
   after each phase (outside the timed phases). The PATCHes are shuffled across the groups.

Group sizes: 10 x 100, 8 x 1,000 and 2 x 10,000 members (each capped at N), drawn from the cycle's users.
The row: users/s end to end (N over the three phases' time together), and one sub-row per phase with its
rps, p50 and p99. It FAILs on any non-2xx answer, on a status other than the expected ones (a match query
that found a user shows as 409 on its POST), and unless the database holds the N users and each group
with exactly its members at the end.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any
from urllib.parse import quote_plus

import sqlalchemy as sa

from bench import data
from bench.context import Bench
from bench.load import Phase, Result
from bench.registry import workload
from scimjit.scim.schema import ENTERPRISE_URN, GROUP_URN, USER_URN
from scimjit.store.tables import groups, memberships, users

SCIM = "/scim/v2"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
ADSCIM_GROUP = "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group"
GROUP_PLAN = (100,) * 10 + (1_000,) * 8 + (10_000,) * 2  # members per group, before capping at N


def upn(tag: str, j: int) -> str:
    doc = data.user_doc(j)
    return f"{doc['name']['givenName']}.{doc['name']['familyName']}.{j}@i1-{tag}.contoso.com"


def user_body(tag: str, j: int) -> dict[str, Any]:
    """What Entra POSTs for a user with the default attribute mappings (UPN -> userName, mail -> the work
    email, mailNickname -> externalId, employeeId, department)."""
    name = upn(tag, j)
    doc = data.user_doc(j)
    given, family = doc["name"]["givenName"], doc["name"]["familyName"]
    return {
        "schemas": [USER_URN, ENTERPRISE_URN],
        "externalId": name.split("@", 1)[0],
        "userName": name,
        "active": True,
        "displayName": f"{given} {family}",
        "emails": [{"primary": True, "type": "work", "value": name}],
        "meta": {"resourceType": "User"},
        "name": {"formatted": f"{given} {family}", "familyName": family, "givenName": given},
        ENTERPRISE_URN: doc[ENTERPRISE_URN],
        "roles": [],
    }


def group_name(tag: str, k: int, size: int) -> str:
    return f"I1 {tag} {data.DEPARTMENTS[k % len(data.DEPARTMENTS)]} {k:02d} ({size:,})"


def _filter(attribute: str, value: str) -> str:
    return "filter=" + quote_plus(f'{attribute} eq "{value}"')  # Entra form-encodes the query


@workload("I1", "Entra initial cycle: users, groups, members")
def initial_cycle(b: Bench) -> Result:
    n, tag = b.options.cycle_users, b.tag
    if n < 1:
        raise ValueError("--cycle-users must be at least 1")
    sizes = [min(size, n) for size in GROUP_PLAN]
    domain = f"@i1-{tag}.contoso.com"

    user_requests: list[bytes] = []
    for j in range(n):
        user_requests.append(b.request("GET", f"{SCIM}/Users?{_filter('userName', upn(tag, j))}"))
        user_requests.append(b.request("POST", f"{SCIM}/Users", user_body(tag, j)))
    users_result = b.all_of(user_requests, chain=2, label="users")
    del user_requests
    ids = _user_ids(b, domain)

    names = [group_name(tag, k, size) for k, size in enumerate(sizes)]
    group_requests: list[bytes] = []
    for k, name in enumerate(names):
        group_requests.append(
            b.request("GET", f"{SCIM}/Groups?excludedAttributes=members&{_filter('displayName', name)}")
        )
        body = {
            "schemas": [GROUP_URN, ADSCIM_GROUP],
            "externalId": data._uuid(f"i1-group:{tag}:{k}"),
            "displayName": name,
            "meta": {"resourceType": "Group"},
        }
        group_requests.append(b.request("POST", f"{SCIM}/Groups", body))
    groups_result = b.all_of(group_requests, chain=2, label="groups")
    group_ids = _group_ids(b, names)

    rng = random.Random(f"{tag}:I1")
    patches: list[bytes] = []
    for name, size in zip(names, sizes, strict=True):
        if name not in group_ids:
            continue  # its POST failed: counted below
        path = f"{SCIM}/Groups/{group_ids[name][0]}"
        for j in rng.sample(range(n), size):
            uid = ids.get(upn(tag, j))
            if uid is None:
                continue  # its POST failed: counted below
            op = {"op": "Add", "path": "members", "value": [{"$ref": None, "value": uid}]}
            patches.append(b.request("PATCH", path, {"schemas": [PATCH_OP], "Operations": [op]}))
    rng.shuffle(patches)
    members_result = b.all_of(patches, label="members") if patches else Result(0, 0.0)
    del patches

    phases = [
        Phase("I1 u", "└ users: GET ?filter=userName eq, POST", users_result),
        Phase("I1 g", "└ groups: GET ?filter=displayName eq, POST", groups_result),
        Phase("I1 m", "└ members: PATCH Add, 1 member each", members_result),
    ]
    problems = _expected_statuses(users_result, n, "users", {200: n, 201: n})
    problems += _expected_statuses(groups_result, len(sizes), "groups", {200: len(sizes), 201: len(sizes)})
    problems += _check_database(b, domain, n, names, sizes)
    return _total(phases, n, sizes, problems)


def _user_ids(b: Bench, domain: str) -> dict[str, str]:
    with b.target.db.engine.connect() as conn:
        rows = conn.execute(
            sa.select(users.c.user_name, users.c.id).where(users.c.user_name.like(f"%{domain}"))
        )
        return {name: uid for name, uid in rows}


def _group_ids(b: Bench, names: list[str]) -> dict[str, tuple[str, int]]:
    with b.target.db.engine.connect() as conn:
        rows = conn.execute(
            sa.select(groups.c.display_name, groups.c.id, groups.c.pk).where(groups.c.display_name.in_(names))
        )
        return {name: (gid, pk) for name, gid, pk in rows}


def _expected_statuses(r: Result, count: int, what: str, want: dict[int, int]) -> list[str]:
    if r.statuses == want:
        return []
    got = ", ".join(f"{k}: {v:,}" for k, v in sorted(r.statuses.items()))
    need = ", ".join(f"{k}: {v:,}" for k, v in sorted(want.items()))
    return [
        f"{what}: statuses {got or 'none'}, expected {need} (a match query, then a create, for each of {count:,})"
    ]


def _check_database(b: Bench, domain: str, n: int, names: list[str], sizes: list[int]) -> list[str]:
    problems = []
    have = len(_user_ids(b, domain))
    if have != n:
        problems.append(f"the database holds {have:,} of the cycle's {n:,} users")
    found = _group_ids(b, names)
    if len(found) != len(names):
        problems.append(f"the database holds {len(found)} of the cycle's {len(names)} groups")
    with b.target.db.engine.connect() as conn:
        counts = dict(
            conn.execute(
                sa.select(memberships.c.group_pk, sa.func.count())
                .where(memberships.c.group_pk.in_([pk for _, pk in found.values()]))
                .group_by(memberships.c.group_pk)
            ).all()
        )
    wrong = [
        f"{name}: {counts.get(found[name][1], 0):,}"
        for name, size in zip(names, sizes, strict=True)
        if name in found and counts.get(found[name][1], 0) != size
    ]
    if wrong:
        problems.append(f"groups with the wrong member count: {'; '.join(wrong)}")
    return problems


def _total(phases: list[Phase], n: int, sizes: list[int], problems: list[str]) -> Result:
    parts = [p.result for p in phases]
    seconds = sum(r.seconds for r in parts)
    statuses: Counter[int] = Counter()
    for r in parts:
        statuses.update(r.statuses)
    server = [r.server_cpu_seconds for r in parts if r.server_cpu_seconds is not None]
    other = sum((r.other_cpu_cores or 0.0) * r.seconds for r in parts)
    members = sum(sizes)
    rate = n / seconds if seconds > 0 else 0.0
    headline = (
        f"{rate:,.0f} users/s end to end: {n:,} users, then {len(sizes)} groups with {members:,} members "
        f"in {seconds:.1f} s (phases: users {phases[0].result.seconds:.1f} s, groups "
        f"{phases[1].result.seconds:.1f} s, members {phases[2].result.seconds:.1f} s)"
    )
    return Result(
        requests=sum(r.requests for r in parts),
        seconds=seconds,
        errors=sum(r.errors for r in parts),
        statuses=dict(statuses),
        error_sample=next((r.error_sample for r in parts if r.error_sample), None),
        gen_cpu_seconds=sum(r.gen_cpu_seconds for r in parts),
        ended_by="count",
        response_bytes=sum(r.response_bytes for r in parts),
        server_cpu_seconds=sum(server) if server else None,
        other_cpu_cores=other / seconds if seconds > 0 else None,
        problems=problems,
        phases=phases,
        extra={
            "users_per_second": round(rate, 1),
            "cycle_seconds": round(seconds, 3),
            "users": n,
            "group_sizes": sizes,
            "memberships": members,
            "headline": headline,
            "summary": headline
            + ("" if problems else "; database checked: every user, group and member is there"),
        },
    )
