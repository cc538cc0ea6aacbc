"""Pure model code shared by the trainer and the edge agent (never imports either)."""
