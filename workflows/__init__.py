"""Inngest functions and the outbox relay, over the service layer."""
