"""Monitoring the champion after go-live: performance on matured outcomes, input drift and
data-quality drift, each with a green / amber / red status against the model spec."""
