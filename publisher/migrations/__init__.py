"""The schema's migrations (Alembic): ``versions/`` holds one file per revision."""

#: the newest revision in ``versions/`` (``tests/test_db.py`` checks it against Alembic's own
#: answer). Every process upgrades on start; a store already here needs no Alembic at all.
HEAD = "0006"
