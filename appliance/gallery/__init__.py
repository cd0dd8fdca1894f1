"""The gallery: people and their face templates in SQLite, an in-memory 1:N index, enrolment."""
