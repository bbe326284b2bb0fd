"""Small shared helpers (atomic files, seeding, hashing)."""
