"""Database retention for the contact center's PostgreSQL databases."""
