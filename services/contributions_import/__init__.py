"""Reading contribution records from outside: git repositories and Stackalytics directory files."""
