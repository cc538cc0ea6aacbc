"""Equipment simulators with injectable faults and ground-truth labels."""
