"""The gearwatch edge agent: sources -> framer -> scorers -> events -> sinks."""
