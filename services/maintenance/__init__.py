"""Housekeeping the system runs on a schedule: pruning what has served its purpose."""
