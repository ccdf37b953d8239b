"""The PRECIS key of identifiers (RFC 8265 UsernameCaseMapped, `scim.identifiers`): what maps, what is refused."""

from __future__ import annotations

import precis_i18n
import pytest

from scimjit.scim.identifiers import DisallowedIdentifier, fragment_key, identifier_key, literal_key

KELVIN_KATE = "\u212aate"  # U+212A KELVIN SIGN, then "ate": str.lower() makes it "kate"
FULLWIDTH_KATE = "\uff2b\uff41\uff54\uff45"  # FULLWIDTH K, a, t, e


def test_case_is_mapped():
    assert identifier_key("KATE") == identifier_key("kate") == "kate"
    assert identifier_key("\u00c5NGSTR\u00d6M") == "\u00e5ngstr\u00f6m"


def test_kelvin_sign_is_refused_naming_the_character():
    assert KELVIN_KATE.lower() == "kate"  # the bug: str.lower made it another user's name
    with pytest.raises(DisallowedIdentifier) as excinfo:
        identifier_key(KELVIN_KATE)
    assert "U+212A KELVIN SIGN" in excinfo.value.detail and "compatibility" in excinfo.value.detail
    assert literal_key(KELVIN_KATE) is None


def test_fullwidth_is_mapped_to_its_ordinary_letters():
    assert identifier_key(FULLWIDTH_KATE) == "kate"


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ("a\x00b", "U+0000"),
        ("ab\u200b", "U+200B ZERO WIDTH SPACE"),
        ("x\U0001f600", "U+1F600 GRINNING FACE"),
        ("\ufb01ne", "U+FB01 LATIN SMALL LIGATURE FI"),
    ],
)
def test_controls_invisibles_symbols_and_ligatures_are_refused(value, named):
    with pytest.raises(DisallowedIdentifier) as excinfo:
        identifier_key(value)
    assert named in excinfo.value.detail


def test_userparts_separated_by_single_spaces():
    assert identifier_key("Kate Smith") == "kate smith"
    for bad in (" kate", "kate ", "kate  smith", ""):
        with pytest.raises(DisallowedIdentifier):
            identifier_key(bad)
    with pytest.raises(DisallowedIdentifier):
        identifier_key(f"Dr {KELVIN_KATE}")  # each part is enforced


def test_ascii_fast_path_agrees_with_the_profile():
    profile = precis_i18n.get_profile("UsernameCaseMapped")
    for code in range(0x21, 0x7F):
        value = f"a{chr(code)}Z"
        assert identifier_key(value) == profile.enforce(value)


def test_fragments_map_without_the_whole_string_rules():
    assert fragment_key("KA") == "ka"
    assert fragment_key("\uff2b\uff21") == "ka"  # fullwidth fragment
    assert fragment_key("e S") == "e s"  # a fragment may hold a space
    assert fragment_key("\u212a") is None  # no key holds a Kelvin sign
