"""Helpers the benches share (bench/upload.py)."""

import shutil

import pytest

from bench.upload import require_free_space


def test_a_bench_stops_with_one_line_when_the_disk_cannot_hold_its_files(tmp_path, capsys):
    free = shutil.disk_usage(tmp_path).free
    with pytest.raises(SystemExit) as stop:
        require_free_space(tmp_path, free + 2**40)
    assert stop.value.code == 2
    message = capsys.readouterr().err
    assert message.count("\n") == 1 and "GiB free" in message and "TMPDIR" in message
    require_free_space(tmp_path, 1)  # room enough: it returns
