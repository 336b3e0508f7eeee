"""Messages between YADDB processes (protocol, pure) and the ZeroMQ sockets that carry them."""
