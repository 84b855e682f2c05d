"""Gateway: every documented HTTP route and the WebSocket feed, reading the read models."""
