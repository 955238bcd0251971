"""An incremental read of a plain CSV export (no quote, carriage return or NUL anywhere)
splits its lines itself rather than through the csv module: the rows, the rows refused
and their line numbers are exactly the csv module's, and any file that is not plain
goes through the module as before."""

from __future__ import annotations

import csv
import gzip
import io
import random
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from connectors import files_rows
from connectors.files import FilesSource
from connectors.files_rows import csv_rows, open_text, plain_csv
from crmsync.contract import ConnectorContext
from crmsync.records import Stream

HEADER = ["id", "ad", "şehir", "updated_at"]


def random_text(seed: int, rows: int = 400) -> str:
    """Rows of the header's width, some of another width, blank lines, Turkish letters,
    tabs and spaces, empty cells; the last line with or without its line break."""
    pick = random.Random(seed)
    lines = [",".join(HEADER)]
    for number in range(rows):
        width = len(HEADER) if pick.random() > 0.1 else pick.choice([1, 3, 5])
        cells = [pick.choice(["", "Çağla", " İzmir ", "a\tb", str(number), "x" * 30])]
        days = [f"2026-01-0{pick.randint(1, 9)}" for _ in range(width - 1)]
        cells += [pick.choice([day, ""]) for day in days]
        lines.append("" if pick.random() < 0.05 else ",".join(cells))
    return "\n".join(lines) + ("\n" if seed % 2 else "")


def rows(text: str, plain: bool, drop: Any) -> list[Any]:
    handle = io.StringIO(text, newline="")
    return list(csv_rows(handle, ",", None, drop, plain))


def dropping(day: str) -> tuple[str, Any]:
    return ("updated_at", lambda cell: cell < day)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("block", [7, 64, files_rows.TEXT_BLOCK])
def test_plain_rows_are_the_csv_modules(
    seed: int, block: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Blocks of 7 and 64 characters end inside lines, inside cells and at line breaks."""
    monkeypatch.setattr(files_rows, "TEXT_BLOCK", block)
    text = random_text(seed)
    # rows dropped: those of the first days and the empty cells, the empty cells only,
    # every row (the refused rows come either way)
    for day in ("2026-01-05", "2026-01-01", "9999"):
        found = rows(text, True, dropping(day))
        assert found == rows(text, False, dropping(day))
        assert found or day == "9999"


def test_a_line_over_the_field_size_limit_is_refused_as_the_csv_module_refuses_it() -> None:
    """(The header's longest name is 10 characters, the limit 12, one cell 13.)"""
    rows_text = ["1,a,b,2026-01-09", "2,a,abcdefghijklm,2026-01-09", "3,a,b,2026-01-09"]
    text = "\n".join(["id,ad,şehir,updated_at", *rows_text]) + "\n"
    limit = csv.field_size_limit(12)
    try:
        plain, module = rows(text, True, dropping("2026")), rows(text, False, dropping("2026"))
    finally:
        csv.field_size_limit(limit)
    assert plain == module
    assert [type(row).__name__ for row in plain] == ["Row", "BadRow", "Row"]


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


@pytest.mark.parametrize(
    ("text", "encoding", "plain"),
    [
        ("id,ad\n1,Çağla\n", "utf-8", True),
        ("\ufeffid,ad\n1,Çağla\n", "utf-8", True),  # a byte-order mark
        ("id,ad\n1,Çağla\n", "cp1254", True),  # a single-byte code page
        ("id,ad\n1,Çağla\n", "utf-16", False),  # ASCII is not its bytes
        ('id,ad\n1,"Çağla, Ece"\n', "utf-8", False),  # a quoted cell
        ("id,ad\r\n1,Çağla\r\n", "utf-8", False),  # CRLF: the csv module's own breaks
        ("id,ad\n1,Ça\x00ğla\n", "utf-8", False),  # NUL: the csv module refuses the row
    ],
)
def test_which_files_are_plain(tmp_path: Path, text: str, encoding: str, plain: bool) -> None:
    assert is_plain(write(tmp_path / "c.csv", text, encoding), encoding) is plain


def is_plain(path: Path, encoding: str = "utf-8") -> bool:
    with open_text(path, encoding) as handle:
        return plain_csv(handle, encoding)


def test_a_quote_in_the_last_block_makes_the_file_not_plain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(files_rows, "PREFIX_BLOCK", 16)
    path = write(tmp_path / "c.csv", "id,ad\n" + "1,a\n" * 40 + '2,"b"\n')
    assert not is_plain(path)


def test_the_file_scanned_is_the_one_open_and_the_handle_stays_where_it_was(
    tmp_path: Path,
) -> None:
    """A file with a quote renamed over the path after the read opened a plain one: the
    open file is scanned, and the read goes on from where it was."""
    path = write(tmp_path / "c.csv", "id,ad\n1,a\n2,b\n")
    with open_text(path, "utf-8") as handle:
        assert handle.readline() == "id,ad\n"
        write(tmp_path / "other.csv", 'id,ad\n1,"a"\n').replace(path)
        assert plain_csv(handle, "utf-8")
        assert handle.read() == "1,a\n2,b\n"
    assert not is_plain(path)


def test_a_compressed_file_is_not_plain(tmp_path: Path) -> None:
    path = tmp_path / "c.csv.gz"
    path.write_bytes(gzip.compress(b"id,ad\n1,a\n"))
    assert not is_plain(path)


CUSTOMERS = Path(__file__).resolve().parent.parent / "sample_data" / "customers.csv"


def source(path: Path) -> FilesSource:
    config = {"kind": "files", "customers": {"path": str(path), "updated_at": "updated_at"}}
    return FilesSource(config, ConnectorContext(name="shop", config_dir=path.parent))


def read(path: Path, since: datetime | None) -> list[Any]:
    return list(source(path).read(Stream.CUSTOMERS, since, datetime(2030, 1, 1, tzinfo=UTC)))


@pytest.fixture
def split_by(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[bool]]:
    """Whether each CSV read of the files source took the plain path."""
    taken: list[bool] = []
    split = files_rows.csv_rows

    def recording(*args: Any, **kwargs: Any) -> Any:
        taken.append(bool(args[4] if len(args) > 4 else kwargs.get("plain", False)))
        return split(*args, **kwargs)

    monkeypatch.setattr("connectors.files.csv_rows", recording)
    yield taken


def test_an_incremental_read_of_the_sample_is_the_same_on_either_path(
    tmp_path: Path, split_by: list[bool]
) -> None:
    """The bundled customers export with a malformed row added (and with a quoted cell
    added, which sends it through the csv module): the same records and issues."""
    since = datetime(2025, 6, 1, tzinfo=UTC)
    lines = CUSTOMERS.read_text(encoding="utf-8").splitlines(keepends=True)
    plain = write(tmp_path / "plain.csv", "".join([*lines[:50], "1,2,3\n", *lines[50:]]))
    row = next(csv.DictReader(io.StringIO(lines[0] + lines[1])))
    row.update(customer_id="990001", updated_at="2026-01-01T00:00:00+03:00")
    extra = io.StringIO()
    csv.writer(extra, quoting=csv.QUOTE_ALL, lineterminator="\n").writerow(row.values())
    quoted = write(tmp_path / "quoted.csv", plain.read_text(encoding="utf-8") + extra.getvalue())
    found = read(plain, since)
    assert split_by == [True]
    assert len(found) > 20  # rows changed since, and rows refused
    assert any("the row has 3 fields" in getattr(r, "reason", "") for r in found)
    through_module = read(quoted, since)
    assert split_by == [True, False]
    assert through_module[: len(found)] == found
    assert len(through_module) == len(found) + 1  # the quoted row, changed since


def test_a_full_read_goes_through_the_csv_module(split_by: list[bool]) -> None:
    """A read with no window keeps every row: the module's split is a small part of it."""
    found = read(CUSTOMERS, None)
    assert split_by == [False]
    assert len(found) > 2000
