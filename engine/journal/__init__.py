"""The journal, the only code that talks to SQLite: the connection, the schema and its migrations, the writer, and typed reads."""
