"""The SCIM workloads of the issue, W1..W6 (targets: shares of the hello-world ceiling, issue 13).

Reads vary the user per request over a random sample (so no cache sees the same row twice in a row); writes
use each prepared request once (distinct userNames; a different non-member for every group add).
"""

from __future__ import annotations

import random
from urllib.parse import quote, urlencode

from bench import data
from bench.context import Bench
from bench.load import Result
from bench.registry import workload

SCIM = "/scim/v2"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
SAMPLE = 20_000  # distinct users a read workload cycles through


def _sample(b: Bench, population: range, k: int, seed: str) -> list[int]:
    rng = random.Random(f"{b.tag}:{seed}")
    return rng.sample(population, min(k, len(population)))


def _users_query(params: dict[str, str | int]) -> str:
    return f"{SCIM}/Users?" + urlencode(params, quote_via=quote)


@workload("W1", "GET /Users/{id}", target_share=0.25)
def get_user(b: Bench) -> Result:
    users = _sample(b, range(b.dataset.users), SAMPLE, "W1")
    return b.http([b.request("GET", f"{SCIM}/Users/{data.user_id(i)}") for i in users])


@workload("W2", 'filter userName eq "..."', target_share=0.15)
def filter_user_name(b: Bench) -> Result:
    users = _sample(b, range(b.dataset.users), SAMPLE, "W2")
    return b.http(
        [b.request("GET", _users_query({"filter": f'userName eq "{data.user_name(i)}"'})) for i in users]
    )


@workload("W3", 'filter name.familyName sw "Sm", count=50', target_share=0.06)
def filter_family_name(b: Bench) -> Result:
    return b.http([b.request("GET", _users_query({"filter": 'name.familyName sw "Sm"', "count": 50}))])


@workload("W4", "startIndex=5000&count=100", target_share=0.05)
def page_deep(b: Bench) -> Result:
    return b.http([b.request("GET", _users_query({"startIndex": 5000, "count": 100}))])


@workload("W5", "POST /Users", target_share=0.08)
def create_user(b: Bench) -> Result:
    bodies = (data.new_user_body(b.tag, j) for j in range(b.unique_budget))
    return b.http([b.request("POST", f"{SCIM}/Users", body) for body in bodies], unique=True)


def add_member(b: Bench, size: int) -> Result:
    """PATCH add one member (a different non-member each time) to the group of `size`, exactly as Entra sends
    it: no `attributes` or `excludedAttributes`, no `Prefer`, `"op":"Add"`, one `{"value": id}`. (Okta and
    AWS send the same shape.) The server chooses the answer: 204 for a group this size (docs/scim.md)."""
    b.ensure_group(size)
    gid = data.group_id(size)
    path = f"{SCIM}/Groups/{gid}"
    newcomers = _sample(b, range(size, b.dataset.users), b.unique_budget, f"W6-{size}")
    requests = [
        b.request(
            "PATCH",
            path,
            {
                "schemas": [PATCH_OP],
                "Operations": [{"op": "Add", "path": "members", "value": [{"value": uid}]}],
            },
        )
        for uid in map(data.user_id, newcomers)
    ]
    return b.http(requests, unique=True)


@workload("W6", "PATCH add member, group of 5,000", target_share=0.07)
def add_member_5k(b: Bench) -> Result:
    return add_member(b, 5_000)


@workload("W6a", "PATCH add member, group of 100", target_share=0.07)
def add_member_100(b: Bench) -> Result:
    return add_member(b, 100)


@workload("W6b", "PATCH add member, group of 100,000", target_share=0.07)
def add_member_100k(b: Bench) -> Result:
    return add_member(b, 100_000)


# W6a and W6b must agree within 20%: adding a member costs the same whatever the group's size.
SAME_COST = ("W6a", "W6b", 0.8)

# Groups W6x add members to; each is seeded up front when --users holds twice its size (members plus as many
# non-members to add), else just before its workload (Bench.ensure_group).
GROUP_SIZES = (100, 5_000, 100_000)
