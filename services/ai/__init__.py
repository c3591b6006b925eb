"""AI summaries: the bounded, permission-checked context of a record, the model interface, and what is kept of
a model's answer. Model calls happen only inside workflow steps, never in a request."""
