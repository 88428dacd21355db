"""Metrics, the buffered writers of metrics and access-log lines, and the hooks around every
request."""
