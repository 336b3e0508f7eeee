"""Replication: the master's write log over PUB/SUB, and slaves that catch up (zguide Clone)."""
