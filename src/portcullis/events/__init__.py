"""Internal events: the catalogue of kinds and the persist-then-fan-out bus."""
