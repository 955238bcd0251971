"""The starting configuration of each connector kind that ``crmsync init`` writes: data
files only (README.md here), named by each connector class's ``starter``."""
