"""Byte ranges and download names."""

import pytest

from gateway.ranges import RangeNotSatisfiable, content_disposition, parse_range, safe_filename


@pytest.mark.parametrize("header,expected", [
    (None, None), ("bytes=0-9", (0, 10)), ("bytes=5-", (5, 100)), ("bytes=-10", (90, 100)),
    ("bytes=90-200", (90, 100)), ("bytes=-500", (0, 100)), ("bytes=0-1,5-6", None), ("items=0-1", None),
    ("bytes=9-3", None),
])
def test_parse_range(header, expected):
    assert parse_range(header, 100) == expected


@pytest.mark.parametrize("header", ["bytes=100-", "bytes=100-200", "bytes=-0"])
def test_unsatisfiable(header):
    with pytest.raises(RangeNotSatisfiable):
        parse_range(header, 100)


def test_filenames_lose_paths_and_control_characters():
    assert safe_filename("../../etc/passwd") == "passwd"
    assert safe_filename("C:\\Users\\x\\a.jpg") == "a.jpg"
    assert safe_filename('evil"\r\nname.txt') == "evilname.txt"
    assert safe_filename("..") == "download"
    header = content_disposition("naïve résumé.pdf")
    assert header.startswith('inline; filename="na_ve r_sum_.pdf"')
    assert "filename*=UTF-8''na%C3%AFve%20r%C3%A9sum%C3%A9.pdf" in header


@pytest.mark.parametrize("header", ["bytes=-5", "bytes=0-", "bytes=0-0"])
def test_any_range_of_an_empty_file_is_unsatisfiable(header):
    with pytest.raises(RangeNotSatisfiable):
        parse_range(header, 0)
