"""Where the data work runs: embedded DuckDB, or Apache Spark (``spark``), and the SQL
dialect bridge between them (``dialect``)."""
