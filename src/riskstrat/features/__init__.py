"""Point-in-time features, labels and the realism profile of an extract."""
