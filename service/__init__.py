"""The riskstrat API (FastAPI). It reads the serving store and the model registry only."""
