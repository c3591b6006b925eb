"""The embedded runner: executes the workflow functions with no Inngest server, keeping run state in Postgres.

It serves the same function objects on a private endpoint (never mounted on the public app) in Inngest's
production mode, learns them by the SDK's signed in-band sync, and drives them with Inngest's call protocol. See
`runner.py` for what it guarantees and `protocol.py` for what it refuses.
"""
