"""The benchmark's data: deterministic users and groups, computable from an index alone.

User `i` has the same id, userName and document in every run and in every process, so the seeder and the
workloads agree without passing a million ids around. Ids are UUIDs (as the server makes them), derived from
a hash of the index, so they are spread over the index like real random ids.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from scimjit.scim.schema import ENTERPRISE_URN, GROUP_URN, USER_URN

GIVEN = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Margaret", "Ken", "Frances", "Dennis",
         "Radia", "John", "Katherine", "Tim", "Sophie", "Linus", "Hedy", "Niklaus", "Shafi", "Guido"]  # fmt: skip
# 2 of 40 family names start with "Sm": W3's `name.familyName sw "Sm"` matches 5% of the users.
FAMILY = ["Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Hamilton", "Thompson", "Allen",
          "Ritchie", "Perlman", "McCarthy", "Johnson", "Berners-Lee", "Wilson", "Torvalds", "Lamarr", "Wirth",
          "Goldwasser", "Rossum", "Smith", "Kay", "Backus", "Hoare", "Lamport", "Cerf", "Kahn", "Stroustrup",
          "Gosling", "Wozniak", "Smythe", "Engelbart", "Sutherland", "Minsky", "Shannon", "Boole", "Babbage",
          "Hollerith", "Zuse", "Codd"]  # fmt: skip
DEPARTMENTS = ["Engineering", "Sales", "Support", "Finance", "Marketing", "Operations", "Legal", "Research"]
SM_FRACTION = sum(f.startswith("Sm") for f in FAMILY) / len(FAMILY)


def _uuid(text: str) -> str:
    return str(uuid.UUID(bytes=hashlib.md5(text.encode()).digest(), version=4))


def user_id(i: int) -> str:
    return _uuid(f"scimjit-bench-user:{i}")


def user_name(i: int) -> str:
    return f"user{i:07d}@example.com"


def group_id(size: int) -> str:
    return _uuid(f"scimjit-bench-group:{size}")


def group_name(size: int) -> str:
    return f"bench-{size}-members"


def user_doc(i: int) -> dict[str, Any]:
    """A realistic User as scimjit stores it (normalised; no id/meta/groups)."""
    given = GIVEN[i % len(GIVEN)]
    family = FAMILY[(i // len(GIVEN)) % len(FAMILY)]
    return {
        "schemas": [USER_URN, ENTERPRISE_URN],
        "userName": user_name(i),
        "externalId": f"ext-{i:07d}",
        "name": {"formatted": f"{given} {family}", "familyName": family, "givenName": given},
        "displayName": f"{given} {family}",
        "emails": [{"value": user_name(i), "type": "work", "primary": True}],
        "active": i % 50 != 0,
        ENTERPRISE_URN: {"employeeNumber": str(100_000 + i), "department": DEPARTMENTS[i % len(DEPARTMENTS)]},
    }


def new_user_body(tag: str, j: int) -> dict[str, Any]:
    """A POST /Users body with a userName no seeded or earlier-posted user has."""
    doc = user_doc(j)
    doc["userName"] = doc["emails"][0]["value"] = f"new-{tag}-{j}@example.com"
    doc["externalId"] = f"new-{tag}-{j}"
    return doc


def group_doc(size: int) -> dict[str, Any]:
    return {"schemas": [GROUP_URN], "displayName": group_name(size)}
