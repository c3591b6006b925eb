"""AI summaries of records and pipelines: requested by a user, produced by a workflow, read by the requester."""
