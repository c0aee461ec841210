"""Launching spot capacity: pure decisions (errors, backoff, pairs, idempotency) and the bootstrap."""
