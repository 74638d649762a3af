"""The USR demo: seeded DNA datasets and derived namespaces."""
