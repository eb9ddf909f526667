"""Durable deferral on Redis: keys, store, drainer, batcher, poller."""
