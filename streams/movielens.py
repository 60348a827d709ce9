"""MovieLens as kapparec events: movies become catalog events, ratings become ``rate`` events.

Reads an ml-latest-small style folder (ratings.csv, movies.csv) or an ml-100k folder
(u.data, u.item). Ids follow the rest of the log: user 7 is "u7", movie 42 is "i42".
Genres become lower-case categories; "(no genres listed)" and ml-100k's "unknown" become none.

A movie's ``created_at`` is its first rating time, not its title year: many years precede
1970 (negative epoch times the schema refuses), and dating an item at its first rating keeps
the invariant the rest of the system relies on, that no interaction precedes its item.
Movies nobody rated are dated at the first rating of the whole data set. The title year becomes
the catalog's ``release_year`` (schema 2); a title without one ("Babylon 5") leaves it unset.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator

from pydantic import ValidationError

from kapparec.errors import KapparecError
from streams.schema import MAX_RELEASE_YEAR, MIN_RELEASE_YEAR, CatalogEvent, Context, EventType, InteractionEvent

if TYPE_CHECKING:
    from streams.producer import LogProducer

# ml-100k ships its genre names in u.genre; this is that file's content, in flag order.
ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)
NO_GENRE = {"(no genres listed)", "unknown"}
# "Toy Story (1995)"; a series gives its first year: "Planet Earth (2006–2007)".
TITLE_YEAR = re.compile(r"\((\d{4})(?:[-–]\d{4})?\)\s*$")


@dataclass(frozen=True)
class _Rating:
    user: str
    movie: str
    rating: float
    timestamp: int  # seconds


@dataclass(frozen=True)
class _Movie:
    movie: str
    title: str
    genres: tuple[str, ...]


def read_movielens(path: str | Path) -> tuple[list[CatalogEvent], Iterator[InteractionEvent]]:
    """Catalog events (``created_at`` order) and ``rate`` events (event-time order) of a MovieLens folder."""
    folder = Path(path)
    if not folder.is_dir():
        raise KapparecError(f"MovieLens folder not found: {folder}")
    if (folder / "ratings.csv").exists() or (folder / "movies.csv").exists():
        movies = _read_latest_movies(_required(folder, "movies.csv"))
        ratings = _read_latest_ratings(_required(folder, "ratings.csv"))
    elif (folder / "u.data").exists() or (folder / "u.item").exists():
        movies = _read_100k_movies(_required(folder, "u.item"))
        ratings = _read_100k_ratings(_required(folder, "u.data"))
    else:
        raise KapparecError(f"{folder} is not a MovieLens folder (expected ratings.csv + movies.csv, or u.data + u.item)")
    ratings.sort(key=lambda r: (r.timestamp, int(r.user), int(r.movie)))
    return _catalog(movies, ratings), _rate_events(ratings)


def import_movielens(path: str | Path, producer: "LogProducer") -> tuple[int, int]:
    """Send a MovieLens folder to the log; returns (catalog events, rating events) sent."""
    return send_movielens(*read_movielens(path), producer)


def send_movielens(catalog: list[CatalogEvent], ratings: Iterable[InteractionEvent],
                   producer: "LogProducer") -> tuple[int, int]:
    """Send what ``read_movielens`` read: the catalog first, so every rated item is known."""
    for item in catalog:
        producer.send_catalog(item)
    sent = 0
    for event in ratings:
        producer.send_interaction(event)
        sent += 1
    producer.flush()
    return len(catalog), sent


def _required(folder: Path, name: str) -> Path:
    file = folder / name
    if not file.is_file():
        raise KapparecError(f"MovieLens file missing: {file}")
    return file


def _rows(file: Path, delimiter: str, encoding: str, header: bool) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of a delimited file; quoting only matters for the CSV format."""
    with file.open(newline="", encoding=encoding) as handle:
        quoting = csv.QUOTE_MINIMAL if delimiter == "," else csv.QUOTE_NONE
        reader = csv.reader(handle, delimiter=delimiter, quoting=quoting)
        if header:
            next(reader, None)
        for row in reader:
            if row:
                yield reader.line_num, row


def _bad_row(file: Path, line: int, problem: str) -> KapparecError:
    return KapparecError(f"{file}:{line}: {problem}")


def _read_ratings(file: Path, delimiter: str) -> list[_Rating]:
    ratings = []
    for line, row in _rows(file, delimiter, "utf-8", header=delimiter == ","):
        try:
            user, movie, rating, timestamp = row[:4]
            ratings.append(_Rating(str(int(user)), str(int(movie)), float(rating), int(timestamp)))
        except ValueError:
            raise _bad_row(file, line, f"expected user, movie, rating, timestamp; got {row!r}") from None
    return ratings


def _read_latest_ratings(file: Path) -> list[_Rating]:
    return _read_ratings(file, ",")


def _read_100k_ratings(file: Path) -> list[_Rating]:
    return _read_ratings(file, "\t")


def _read_latest_movies(file: Path) -> list[_Movie]:
    movies = []
    for line, row in _rows(file, ",", "utf-8", header=True):
        if len(row) != 3 or not row[0].isdigit():
            raise _bad_row(file, line, f"expected movieId,title,genres; got {row!r}")
        movies.append(_Movie(row[0], row[1], tuple(row[2].split("|"))))
    return movies


def _read_100k_movies(file: Path) -> list[_Movie]:
    movies = []
    for line, row in _rows(file, "|", "latin-1", header=False):
        flags = row[-len(ML100K_GENRES):]
        if len(row) < 5 + len(ML100K_GENRES) or not row[0].isdigit() or set(flags) - {"0", "1"}:
            raise _bad_row(file, line, f"expected id|title|dates|url|{len(ML100K_GENRES)} genre flags; got {row!r}")
        genres = tuple(g for g, flag in zip(ML100K_GENRES, flags) if flag == "1")
        movies.append(_Movie(row[0], row[1], genres))
    return movies


def title_year(title: str) -> int | None:
    """The release year a MovieLens title ends with, if it names one the schema takes."""
    found = TITLE_YEAR.search(title)
    year = int(found.group(1)) if found else None
    return year if year is not None and MIN_RELEASE_YEAR <= year <= MAX_RELEASE_YEAR else None


def _catalog(movies: list[_Movie], ratings: list[_Rating]) -> list[CatalogEvent]:
    first_rated: dict[str, int] = {}
    for rating in ratings:  # sorted by time, so the first seen is the earliest
        first_rated.setdefault(rating.movie, rating.timestamp)
    dataset_start = ratings[0].timestamp if ratings else 0
    events = [
        CatalogEvent(
            item_id=f"i{movie.movie}",
            title=movie.title,
            categories=tuple(g.lower() for g in movie.genres if g and g not in NO_GENRE),
            created_at=first_rated.get(movie.movie, dataset_start) * 1000,
            release_year=title_year(movie.title),
        )
        for movie in movies
    ]
    return sorted(events, key=lambda e: (e.created_at, int(e.item_id[1:])))


def _rate_events(ratings: Iterable[_Rating]) -> Iterator[InteractionEvent]:
    for rating in ratings:
        try:
            yield InteractionEvent(
                user_id=f"u{rating.user}", item_id=f"i{rating.movie}", event_type=EventType.RATE,
                value=rating.rating, event_time=rating.timestamp * 1000, context=Context(),
            )
        except ValidationError as exc:
            raise KapparecError(f"MovieLens rating {rating} breaks the event schema: {exc.errors()[0]['msg']}") from None
