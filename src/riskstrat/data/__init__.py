"""Reading extracts: the contract, the file boundary, validation, and adapters (OMOP)."""
