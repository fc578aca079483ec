"""tus header grammar."""

import pytest

from gateway.tus.headers import HeaderError, encode_metadata, parse_metadata, parse_size


def test_metadata_round_trip():
    metadata = {"filename": "vidéo 1.mp4", "empty": None, "type": "video/mp4"}
    assert parse_metadata(encode_metadata(metadata)) == metadata


@pytest.mark.parametrize("header", ["a b c", "k !!!", "k YQ==,k YQ==", ",", "k YQ", "k " + "/w==", "k\tv YQ=="])
def test_bad_metadata_is_rejected(header):
    with pytest.raises(HeaderError):
        parse_metadata(header)


def test_metadata_pair_limit():
    with pytest.raises(HeaderError):
        parse_metadata(",".join(f"k{i} YQ==" for i in range(100)))


@pytest.mark.parametrize("value,expected", [(None, None), ("0", 0), ("42", 42), (" 7 ", 7)])
def test_sizes(value, expected):
    assert parse_size(value, "X") == expected


@pytest.mark.parametrize("value", ["-1", "1.5", "0x10", "", "99999999999999999999", "+1", "1e3"])
def test_bad_sizes(value):
    with pytest.raises(HeaderError):
        parse_size(value, "X")
