"""Running usagehub without containers: embedded NATS and Postgres, and the ``usagehub up`` supervisor."""
