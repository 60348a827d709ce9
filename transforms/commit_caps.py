"""How large one commit of the feature pipeline may grow (``transforms.bundled``); light, so the CLI can show them."""

# Fields held in the merge before a commit: bounds a bundle's memory whatever its length
# (a bounded read of a partition is one bundle on the local runner).
DEFAULT_MAX_KEYS = 100_000
# The continuous job's cap is far smaller: its merge script holds Redis's one thread, and every
# read serving makes meanwhile waits behind it, so a merge's time is a latency every live request
# may pay. That time grows with the commit's fields while Redis's total time per record hardly
# does (``INFO commandstats``: the fixed cost per commit is small), so the cap trades only the job's
# own per-commit Python work for shorter stalls. A backfill writes a version no request reads
# until it is published, so it keeps the large commits that amortise that work.
STREAM_MAX_KEYS = 500
# Records extracted at a time: how often the size cap is checked within a fetched batch. A record
# adds a few fields (tens in a dense session), so a piece is kept to a fiftieth of the cap: a
# commit passes its cap by at most one piece's fields.
PIECE_RECORDS = 2_000
RECORDS_PER_CAP = 50
