"""Malformed or hostile input: a one-line error, no traceback, exit 2, nothing written.

Every case fails before any I/O, so none needs a hub or a cluster.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raydf.cli import main
from raydf.errors import InvalidURL
from raydf.uri import parse_url

CASES: list[tuple[str, list[str]]] = [
    ("empty url", ["", "-O", "{out}", "-r"]),
    ("no scheme", ["org/model", "-O", "{out}", "-r"]),
    ("unknown scheme", ["ftp://host/x", "-O", "{out}"]),
    ("upper-case scheme", ["HF://org/model", "-O", "{out}", "-r"]),
    ("one segment", ["hf://model", "-O", "{out}", "-r"]),
    ("empty owner", ["hf:///model", "-O", "{out}", "-r"]),
    ("dotdot owner", ["hf://../model", "-O", "{out}", "-r"]),
    ("dotdot path", ["hf://org/model/../../etc", "-O", "{out}", "-r"]),
    ("dot path", ["hf://org/model/./x", "-O", "{out}", "-r"]),
    ("encoded dotdot", ["hf://org/model/%2e%2e/x", "-O", "{out}", "-r"]),
    ("encoded upper dotdot", ["hf://org/model/%2E%2E/x", "-O", "{out}", "-r"]),
    ("encoded slash", ["hf://org/model/a%2fb", "-O", "{out}", "-r"]),
    ("encoded backslash", ["hf://org/model/a%5c..%5cb", "-O", "{out}", "-r"]),
    ("backslash", ["hf://org/model/a\\b", "-O", "{out}", "-r"]),
    ("empty segment", ["hf://org/model//x", "-O", "{out}", "-r"]),
    ("nul", ["hf://org/mo\x00del", "-O", "{out}", "-r"]),
    ("newline", ["hf://org/model\n", "-O", "{out}", "-r"]),
    ("space", ["hf://org/my model", "-O", "{out}", "-r"]),
    ("leading space", [" hf://org/model", "-O", "{out}", "-r"]),
    ("unicode owner", ["hf://örg/model", "-O", "{out}", "-r"]),
    ("rtl override", ["hf://org/mod\u202eel", "-O", "{out}", "-r"]),
    ("very long", ["hf://org/" + "m" * 5000, "-O", "{out}", "-r"]),
    ("bad escape", ["hf://org/model/%zz%ff", "-O", "{out}", "-r"]),
    ("repo type only", ["hf://datasets", "-O", "{out}", "-r"]),
    ("modelscope spaces", ["modelscope://spaces/org/app", "-O", "{out}", "-r"]),
    ("query in hub url", ["hf://org/model?rev=main", "-O", "{out}", "-r"]),
    ("credentials in url", ["https://user:hunter2@host/x", "-O", "{out}"]),
    ("port out of range", ["https://host:99999/x", "-O", "{out}"]),
    ("file url with host", ["file://remote/etc/passwd", "-O", "{out}"]),
    ("whole repo without -r", ["hf://org/model", "-O", "{out}"]),
    ("empty -O", ["hf://org/model", "-O", "", "-r"]),
    ("ms token for hf url", ["hf://org/model", "-O", "{out}", "-r", "--ms-token", "t"]),
    ("hf revision for ms url", ["modelscope://org/model", "-O", "{out}", "-r",
                                "--hf-revision", "main"]),
    ("empty revision", ["hf://org/model", "-O", "{out}", "-r", "--hf-revision", ""]),
    ("space revision", ["hf://org/model", "-O", "{out}", "-r", "--hf-revision", " main"]),
    ("dotdot revision", ["hf://org/model", "-O", "{out}", "-r", "--hf-revision", "a/../b"]),
    ("endpoint without scheme", ["hf://org/model", "-O", "{out}", "-r",
                                 "--hf-endpoint", "127.0.0.1:1"]),
    ("local with address", ["hf://org/model", "-O", "{out}", "-r", "--local",
                            "--address", "127.0.0.1:6379"]),
    ("empty include", ["hf://org/model", "-O", "{out}", "-r", "--include", ""]),
    ("bucket without -r", ["s3://bucket", "-O", "{out}"]),
]


@pytest.mark.parametrize(("name", "argv"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_line_and_nothing_is_written(
    name: str, argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RAYDF_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    args = [a.replace("{out}", str(out)) for a in argv]
    code = main(["get", *args, "--no-progress"] + ([] if "--local" in args or
                                                    "--address" in args else ["--local"]))
    captured = capsys.readouterr()
    assert code == 2, captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("raydf: error: "), captured.err
    assert "Traceback" not in captured.err and "hunter2" not in captured.err
    assert captured.out == ""
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_there_are_at_least_thirty_cases() -> None:
    assert len(CASES) >= 30


@settings(max_examples=300)
@given(st.text(max_size=60))
def test_parse_url_never_fails_with_anything_but_invalid_url(text: str) -> None:
    try:
        source = parse_url(text)
    except InvalidURL as err:
        assert "\n" not in str(err)
        return
    assert ".." not in source.path.split("/")
    assert parse_url(source.format()) == source
