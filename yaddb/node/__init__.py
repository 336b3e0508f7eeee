"""A storage node: the engine behind a ZeroMQ ROUTER socket."""
