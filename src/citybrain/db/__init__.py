"""The operational store: SQLAlchemy base, engines and sessions, Alembic migrations."""
