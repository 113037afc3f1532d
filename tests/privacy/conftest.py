"""Privacy tests share the lifecycle tests' database fixture (PostgreSQL in CI, SQLite here)."""

from tests.lifecycle.conftest import database, luna  # noqa: F401 - re-exported fixtures
