"""The MQTT link: device API (status, events, signed commands), outbox, enrolment sync."""
