"""How large one commit of the feature pipeline may grow (``transforms.bundled``); light, so the CLI can show them."""

# Fields held in the merge before a commit: bounds a bundle's memory whatever its length
# (a bounded read of a partition is one bundle on the local runner).
DEFAULT_MAX_KEYS = 100_000
# The continuous job's cap is far smaller: its merge script holds Redis's one thread, and every
# read serving makes meanwhile waits behind it. A merge's time grows with its fields (a few
# microseconds each: ``INFO commandstats``), so a commit as large as the backfill's stalls live
# requests for hundreds of milliseconds, and one of 2,000 fields for about ten. A backfill writes
# a version no request reads until it is published, so it keeps the large commits that amortise
# each one's fixed cost.
STREAM_MAX_KEYS = 2_000
# Records extracted at a time: how often the size cap is checked within a fetched batch. A record
# adds a few fields (tens in a dense session), so a piece is kept to a fiftieth of the cap: a
# commit passes its cap by at most one piece's fields.
PIECE_RECORDS = 2_000
RECORDS_PER_CAP = 50
