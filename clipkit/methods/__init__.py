"""Method modules: one thin `run`-style entry point per command, built on the shared core."""
