"""How identifiers compare: userName (and the login's claims compared with userName or emails) by the
PRECIS UsernameCaseMapped profile of RFC 8265, not by `str.lower`.

`str.lower` maps U+212A KELVIN SIGN to "k", so "\u212aate" compared equal to "kate" and signed in as her. PRECIS
instead *refuses* identifiers holding compatibility characters (IdentifierClass, RFC 8264 §9.1: HasCompat,
controls, symbols and punctuation outside ASCII, ...), and maps what it keeps the same way on every side:
fullwidth and halfwidth forms to their ordinary letters (fullwidth "kate" is "kate"), Unicode toLower, NFC.

Two choices of ours, written down in docs/scim.md:

* The class is checked on the width-mapped input (RFC 8265 §3.3.2, preparation), before case mapping: the
  precis-i18n library checks only after case mapping and NFC, by which point U+212A has become "k".
* Spaces: a SCIM userName may be several userparts separated by single spaces (RFC 8265 §3.3.1, "Kate
  Smith"); each part is enforced on its own. A leading, trailing or repeated space is an empty userpart and is
  refused.

One key function serves every place identifiers are compared: the stored `users.user_name_ci`
(`store.promoted`, so uniqueness and `userName eq` are index lookups on the key), the filter compiler's
literal (`store.compile`), and the login match (`entitlement.identity`).
"""

from __future__ import annotations

import functools
import unicodedata

import precis_i18n
from precis_i18n.derived import CONTEXTJ, CONTEXTO, PVALID, derived_property

_PROFILE = precis_i18n.get_profile("UsernameCaseMapped")
_FRAGMENT_VALID = frozenset({PVALID, CONTEXTJ, CONTEXTO})
_REASONS = {
    "has_compat": "a compatibility character",
    "spaces": "a space character",
    "controls": "a control character",
    "symbols": "a symbol",
    "punctuation": "punctuation",
    "precis_ignorable_properties": "an ignorable (invisible) character",
    "unassigned": "an unassigned code point",
    "other": "a character identifiers may not hold",
    "old_hangul_jamo": "an old Hangul jamo",
    "bidi_rule": "a mix of right-to-left and left-to-right text the bidi rule refuses",
}


class DisallowedIdentifier(ValueError):
    """An identifier PRECIS refuses; the message names the character and why (RFC 8265)."""

    def __init__(self, value: str, detail: str) -> None:
        super().__init__(detail)
        self.value = value
        self.detail = detail


def identifier_key(value: str) -> str:
    """The comparison key of an identifier: equal keys are the same identifier. Raises `DisallowedIdentifier`."""
    return _key(value)


@functools.lru_cache(maxsize=4096)  # the login and `userName eq` look up the same few names again and again
def _key(value: str) -> str:
    parts = value.split(" ")
    if any(part == "" for part in parts):
        raise DisallowedIdentifier(
            value, f"{value!r} has a leading, trailing or repeated space (RFC 8265 §3.3.1 userparts)"
        )
    return " ".join(_part_key(value, part) for part in parts)


def _part_key(whole: str, part: str) -> str:
    if part.isascii() and part.isprintable():  # U+0021-007E (spaces are split off): PRECIS maps it to lower()
        return part.lower()
    try:
        _PROFILE.base.enforce(_PROFILE.width_mapping_rule(part), _PROFILE.name)  # preparation (§3.3.2)
        return str(_PROFILE.enforce(part))
    except UnicodeEncodeError as exc:
        raise DisallowedIdentifier(whole, _explain(whole, exc)) from None


def _explain(whole: str, exc: UnicodeEncodeError) -> str:
    reason = exc.reason.removeprefix("DISALLOWED/")
    what = _REASONS.get(reason, f"what the PRECIS IdentifierClass refuses ({reason})")
    if exc.end - exc.start == 1 and reason not in ("bidi_rule", "empty"):
        char = exc.object[exc.start]
        named = f"U+{ord(char):04X} {unicodedata.name(char, '')}".rstrip()  # controls have no name
        return f"{whole!r} holds {named}, {what}: an identifier may not (RFC 8265)"
    return f"{whole!r} holds {what}: an identifier may not (RFC 8265)"


def fragment_key(value: str) -> str | None:
    """A `co` / `sw` / `ew` fragment as it compares with keys: the mapping part of the profile only (width,
    toLower, NFC), since a fragment need not be a whole identifier. None when the fragment holds a character no
    key can hold (U+212A): it matches nothing, where `str.lower` would have made it "k"."""
    if value.isascii() and value.isprintable():
        return value.lower()
    mapped = _PROFILE.width_mapping_rule(value)
    for char in mapped.replace(" ", ""):
        prop, _ = derived_property(ord(char), _PROFILE.base.ucd)
        if prop not in _FRAGMENT_VALID:  # joiners (CONTEXTJ/O) are judged in the whole key, not here
            return None
    return str(_PROFILE.normalization_rule(_PROFILE.case_mapping_rule(mapped)))


def literal_key(value: str) -> str | None:
    """A filter literal compared (`eq`, `ne`, ordering) with keys: its key, or None when it is disallowed (so it
    equals no stored key)."""
    try:
        return identifier_key(value)
    except DisallowedIdentifier:
        return None
