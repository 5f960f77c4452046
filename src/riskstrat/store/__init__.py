"""The serving database: the only code that opens it."""
