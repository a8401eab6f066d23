"""Issue 16 finding 7: the review book (station-reviews.json) keeps every signature when two
stations share a data folder (a lock file, a temp file of each writer's own), and a corrupt one
is a clear error page naming the file and the fix, not a bare 500."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from micropen.host.calibration import load_station
from micropen.tools.station.app import StationConfig, build_app
from micropen.tools.station.routes_records import ReviewBook, ReviewBookError

WRITERS, EACH = 4, 25


def _sign_many(path: str, writer: int) -> None:
    book = ReviewBook(Path(path))
    for i in range(EACH):
        book.add(f"w{writer}-{i}", {"reviewer": f"r{writer}"})


def test_concurrent_writers_lose_no_signature(tmp_path: Path) -> None:
    path = tmp_path / "station-reviews.json"
    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=_sign_many, args=(str(path), w)) for w in range(WRITERS)]
    for p in writers:
        p.start()
    for p in writers:
        p.join(60)
        assert p.exitcode == 0, f"a writer failed or hung (exit {p.exitcode})"
    assert len(ReviewBook(path).all()) == WRITERS * EACH
    names = {p.name for p in tmp_path.iterdir()}  # no temp file left behind
    assert names == {"station-reviews.json", "station-reviews.json.lock"}, names


def test_a_corrupt_review_book_is_a_clear_error_page(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MICROPEN_HOME", str(tmp_path))
    book = ReviewBook()
    book.path.parent.mkdir(parents=True, exist_ok=True)
    book.path.write_text("{not json", encoding="utf-8")
    with pytest.raises(ReviewBookError, match="is corrupt"):
        book.all()
    config = StationConfig(
        host="127.0.0.1", login_required=False, secret="s", station=load_station(), log=False
    )
    with TestClient(
        build_app(config), base_url="http://127.0.0.1", raise_server_exceptions=False
    ) as c:
        r = c.get("/records")
    assert r.status_code == 409, r.text[:500]
    assert str(book.path) in r.text and "move it aside" in r.text
