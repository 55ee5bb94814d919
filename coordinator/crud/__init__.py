"""Database access as plain keyword-only functions; the session's lifetime belongs to the caller."""
