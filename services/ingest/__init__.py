"""Ingest: validates commands, decides their events and appends them to JetStream."""
