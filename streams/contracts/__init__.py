"""What duewatch agrees with the outside world: topic names and their record types, the Avro
codec over ``schemas/``, and the JSON form the command line reads and writes (SPEC §1)."""
