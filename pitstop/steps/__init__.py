"""Built-in steps (the verbs of a runbook). Each module registers its steps by name on import."""
