"""Sources: protocol code that turns bytes from the plant into `SampleBatch`es."""
