"""The name rules (fstore.formats.names, docs/FORMAT.md section 8), pure and exhaustive."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fstore.errors import InvalidArgumentError, InvalidNameError
from fstore.formats.capability import Capability
from fstore.formats.names import MAX_NAME_BYTES, check_name, decode_name, is_control, printable
from fstore.net.trust import NetworkKey

CONTROLS = [chr(c) for c in (*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0))]
# Text without controls or lone surrogates, which the rules forbid.
ALLOWED = st.characters(exclude_categories=["Cc", "Cs"])


def test_the_controls_are_c0_del_and_c1() -> None:
    assert [chr(c) for c in range(0x110000) if is_control(chr(c))] == CONTROLS


@pytest.mark.parametrize("name", ["a", "photos/picture 1.png", "é" * 2048, "x" * MAX_NAME_BYTES])
def test_valid_names_are_returned_as_they_are(name: str) -> None:
    assert check_name(name) is name


@pytest.mark.parametrize("control", CONTROLS)
def test_every_control_character_is_rejected_naming_it_and_where(control: str) -> None:
    with pytest.raises(InvalidNameError) as caught:
        check_name("ab" + control + "c")
    assert f"U+{ord(control):04X} at character 3" in str(caught.value)


@given(st.text(ALLOWED, max_size=40), st.sampled_from(CONTROLS), st.text(ALLOWED, max_size=40))
def test_a_control_anywhere_is_found_at_its_place(before: str, control: str, after: str) -> None:
    with pytest.raises(InvalidNameError) as caught:
        check_name(before + control + after)
    assert f"U+{ord(control):04X} at character {len(before) + 1}" in str(caught.value)


@given(st.text(ALLOWED, min_size=1, max_size=200))
def test_text_without_controls_is_a_name_unless_reserved(text: str) -> None:
    name = "n" + text  # never starts with fs…
    assert check_name(name) == name
    assert decode_name(name.encode()) == name
    assert printable(name) == name


def test_length_is_counted_in_utf8_bytes() -> None:
    with pytest.raises(InvalidNameError, match="cannot be empty"):
        check_name("")
    check_name("é" * (MAX_NAME_BYTES // 2))
    with pytest.raises(InvalidNameError, match=f"at most {MAX_NAME_BYTES} bytes"):
        check_name("é" * (MAX_NAME_BYTES // 2) + "x")


@pytest.mark.parametrize(
    "name",
    ["fs1:", "fs1:anything", "fsd1:tree", "fsn1:token", "fs12:x", "FS1:x", "Fsd2:x"],
)
def test_names_that_start_like_a_capability_are_reserved(name: str) -> None:
    with pytest.raises(InvalidNameError, match="cannot start with"):
        check_name(name)


def test_real_capabilities_and_join_tokens_are_not_names() -> None:
    for text in (str(Capability(os.urandom(32), os.urandom(16))), NetworkKey.generate().token):
        with pytest.raises(InvalidNameError):
            check_name(text)


@pytest.mark.parametrize("name", ["fs:x", "fsx:y", "fs1", "fs1x:y", "afs1:x", "photos/fs1:x"])
def test_only_the_prefix_pattern_is_reserved(name: str) -> None:
    assert check_name(name) == name


def test_an_invalid_name_is_an_invalid_argument() -> None:
    with pytest.raises(InvalidArgumentError):
        check_name("\x1b")


@pytest.mark.parametrize(
    ("raw", "where"),
    [(b"\xff\xfe", "byte 1 (0xff)"), (b"ab\xc3\x28", "byte 3 (0xc3)"), (b"x\xe2\x82", "byte 2")],
)
def test_bytes_that_are_not_utf8_are_rejected_naming_the_byte(raw: bytes, where: str) -> None:
    with pytest.raises(InvalidNameError, match="valid UTF-8") as caught:
        decode_name(raw)
    assert where in str(caught.value)


def test_decoded_names_follow_the_rules_too() -> None:
    with pytest.raises(InvalidNameError, match="U\\+001B"):
        decode_name(b"a\x1bb")


def test_a_name_from_undecodable_bytes_is_not_valid_utf8() -> None:
    name = os.fsdecode(b"bad\xffname")  # what Python makes of such a file name
    with pytest.raises(InvalidNameError, match="valid UTF-8, but character 4 is the byte 0xff"):
        check_name(name)
    with pytest.raises(InvalidNameError, match="valid UTF-8, but character 2 is U\\+D800"):
        check_name("a\ud800")


def test_printable_escapes_every_control_and_only_them() -> None:
    assert printable("a\x1b[31m\x00\n\x7f\x85b é/") == "a\\x1b[31m\\x00\\x0a\\x7f\\x85b é/"
    for control in CONTROLS:
        assert not any(is_control(c) for c in printable(control))
