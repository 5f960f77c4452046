"""Data in: the file boundary of an extract, and adapters from other data models (OMOP CDM).

Nothing here is imported by the service: it reads source data, which the service never does.
"""
