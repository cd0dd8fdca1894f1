"""The door: access and door state machines, relay, GPIO inputs, schedule, verification."""
