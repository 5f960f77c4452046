"""Reading an OMOP Common Data Model (v5.3 or v5.4) into a riskstrat extract.

``import_omop`` opens the source read-only (a DuckDB file, a folder of CDM tables as CSV or
Parquet, or a PostgreSQL schema), maps it to the data contract in DuckDB SQL through the
codelists (``riskstrat.data.codelist``), writes a pseudonymous extract atomically and a mapping
report that accounts for every row read.
"""

from riskstrat.data.omop.importer import ImportResult, import_omop
from riskstrat.data.omop.spark_source import check_spark_source

__all__ = ["ImportResult", "check_spark_source", "import_omop"]
