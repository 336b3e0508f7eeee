"""Online backup and restore of a node's data (`yaddb backup`, `yaddb restore`).

A backup is the node's replication snapshot, streamed over its request socket and written to
one file (format.py): every live item as of one sequence number, while the node goes on
serving. restore.py makes a data directory from it that a node starts on.
"""
