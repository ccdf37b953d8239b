"""Storage: SQLAlchemy tables, the filter-to-SQL compiler, repositories and Alembic migrations."""
