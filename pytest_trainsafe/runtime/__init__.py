"""The runtime detector: torch hooks installed around one test, removed after it.

Everything under this package imports torch; the plugin imports it only once a
test is actually watched.
"""
