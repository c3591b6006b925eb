"""What every domain shares: principal, permissions, errors, unit of work, events, pagination, idempotency."""
