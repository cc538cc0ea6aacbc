"""The `gearwatch` command: one front door to the agent, the trainer and the simulators."""
