"""read_movielens / import_movielens on tiny fixture folders in both formats (never the real data set)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kapparec.errors import KapparecError
from streams.movielens import import_movielens, read_movielens
from streams.producer import LogProducer
from streams.schema import parse_catalog, parse_interaction
from streams.topics import EVENTS, ITEMS, ensure_topics
from tests.test_producer import read_topic

RATINGS_CSV = """userId,movieId,rating,timestamp
1,10,4.0,964982703
2,10,2.5,964981000
1,20,5.0,964983000
2,30,3.0,964990000
"""
MOVIES_CSV = """movieId,title,genres
10,"Heat, The (1995)",Action|Crime|Thriller
20,Toy Story (1995),Adventure|Children
30,Unrated Oddity (2001),(no genres listed)
40,Never Rated (1920),Drama
50,Babylon 5,Sci-Fi
60,Planet Earth (2006–2007),Documentary
"""
U_DATA = "196\t242\t3\t881250949\n186\t302\t3\t891717742\n22\t242\t1\t878887116\n"
FLAGS_242 = "|".join("1" if g in (3, 5) else "0" for g in range(19))  # Animation, Comedy
FLAGS_302 = "|".join("1" if g == 0 else "0" for g in range(19))  # unknown only
U_ITEM = (
    f"242|Kolya (1996)|24-Jan-1997||http://x|{FLAGS_242}\n"
    f"302|L\xe9on (1997)|01-Jan-1997||http://y|{FLAGS_302}\n"
)


@pytest.fixture
def latest(tmp_path: Path) -> Path:
    (tmp_path / "ratings.csv").write_text(RATINGS_CSV)
    (tmp_path / "movies.csv").write_text(MOVIES_CSV)
    return tmp_path


@pytest.fixture
def ml100k(tmp_path: Path) -> Path:
    (tmp_path / "u.data").write_text(U_DATA)
    (tmp_path / "u.item").write_bytes(U_ITEM.encode("latin-1"))
    return tmp_path


def test_latest_small_format(latest):
    catalog, ratings = read_movielens(latest)
    ratings = list(ratings)
    assert [r.event_time for r in ratings] == [964981000000, 964982703000, 964983000000, 964990000000]
    assert [(r.user_id, r.item_id, r.value) for r in ratings][:2] == [("u2", "i10", 2.5), ("u1", "i10", 4.0)]
    assert all(r.event_type.value == "rate" for r in ratings)
    by_id = {c.item_id: c for c in catalog}
    assert len(catalog) == 6
    assert by_id["i10"].title == "Heat, The (1995)"
    assert by_id["i10"].categories == ("action", "crime", "thriller")
    assert by_id["i30"].categories == ()
    assert by_id["i10"].created_at == 964981000000  # its first rating
    assert by_id["i40"].created_at == 964981000000  # never rated: the data set's first rating
    assert [c.created_at for c in catalog] == sorted(c.created_at for c in catalog)


def test_the_title_year_is_the_release_year_and_a_title_without_one_leaves_it_unset(latest):
    by_id = {c.item_id: c for c in read_movielens(latest)[0]}
    years = {item: by_id[item].release_year for item in ("i10", "i20", "i40", "i50", "i60")}
    assert years == {"i10": 1995, "i20": 1995, "i40": 1920, "i50": None, "i60": 2006}
    assert by_id["i50"].schema_version == by_id["i10"].schema_version == 2


def test_ml100k_format(ml100k):
    catalog, ratings = read_movielens(ml100k)
    ratings = list(ratings)
    assert [(r.user_id, r.item_id, r.value, r.event_time) for r in ratings] == [
        ("u22", "i242", 1.0, 878887116000), ("u196", "i242", 3.0, 881250949000), ("u186", "i302", 3.0, 891717742000)]
    by_id = {c.item_id: c for c in catalog}
    assert by_id["i242"].categories == ("animation", "comedy")
    assert by_id["i302"].categories == () and by_id["i302"].title == "L\xe9on (1997)"
    assert (by_id["i242"].release_year, by_id["i302"].release_year) == (1996, 1997)


def test_missing_folder_and_files(tmp_path, latest):
    with pytest.raises(KapparecError, match="folder not found"):
        read_movielens(tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(KapparecError, match="not a MovieLens folder"):
        read_movielens(empty)
    (latest / "movies.csv").unlink()
    with pytest.raises(KapparecError, match="file missing: .*movies.csv"):
        read_movielens(latest)


def test_bad_row_names_file_and_line(latest):
    (latest / "ratings.csv").write_text(RATINGS_CSV + "3,10,lots,964990001\n")
    with pytest.raises(KapparecError, match=r"ratings.csv:6: expected user"):
        read_movielens(latest)


def test_out_of_range_rating_is_a_clear_error(latest):
    (latest / "ratings.csv").write_text(RATINGS_CSV + "3,10,11.0,964990001\n")
    with pytest.raises(KapparecError, match="breaks the event schema"):
        list(read_movielens(latest)[1])


def test_import_lands_counts(stack, latest):
    ensure_topics(stack.bootstrap, partitions=2)
    with LogProducer(stack.bootstrap) as producer:
        assert import_movielens(latest, producer) == (6, 4)
    events = [r for records in read_topic(stack.bootstrap, EVENTS).values() for r in records]
    items = read_topic(stack.bootstrap, ITEMS)[0]
    assert sorted(parse_interaction(r.value).item_id for r in events) == ["i10", "i10", "i20", "i30"]
    catalog = {entry.item_id: entry for entry in (parse_catalog(r.value) for r in items)}
    assert set(catalog) == {"i10", "i20", "i30", "i40", "i50", "i60"}
    assert (catalog["i10"].release_year, catalog["i50"].release_year) == (1995, None)
