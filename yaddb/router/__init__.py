"""The router: places keys on partitions and forwards requests to their masters."""
