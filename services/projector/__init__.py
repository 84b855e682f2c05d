"""Projector: folds the event stream into Postgres read models, one durable consumer per projection."""
