"""The fleet: inventory and host groups, pinned host keys, the fan-out over hosts, and the host steps (tuning,
sysctl, services, packages, reclaim, commands) with their safe file operations."""
