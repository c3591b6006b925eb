"""PipeCD's composition root: settings, database lifecycle, CLI. Front ends are wired here."""
