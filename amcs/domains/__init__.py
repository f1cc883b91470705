"""Problem domains with exact step truth."""
