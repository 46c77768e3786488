"""runstate."""
