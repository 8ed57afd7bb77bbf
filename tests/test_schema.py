"""The README documents exactly the columns pcapclass writes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd

import pcapclass
from pcapclass import schema

REPO = Path(__file__).resolve().parent.parent


def test_readme_tables_match_schema() -> None:
    spec = importlib.util.spec_from_file_location("readme_schemas", REPO / "scripts" / "readme_schemas.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    text = (REPO / "README.md").read_text()
    assert module.render(text) == text, "README schema tables are stale: run python scripts/readme_schemas.py"


def test_outputs_have_the_schema_columns_and_dtypes() -> None:
    result = pcapclass.classify_file(REPO / "tests" / "fixtures" / "pcaps" / "exchange_services.pcap")
    assert list(result.flows.columns) == schema.names(schema.FLOWS)
    assert list(result.captures.columns) == schema.names(schema.CAPTURE)
    assert set(schema.names(schema.BREAKDOWN)) <= set(result.breakdown.columns)
    for column in schema.FLOWS:
        dtype = result.flows[column.name].dtype
        if column.dtype == "category":
            assert isinstance(dtype, pd.CategoricalDtype), column.name
        elif column.dtype == "string":
            assert pd.api.types.is_string_dtype(dtype), column.name
        else:
            assert dtype == pd.api.types.pandas_dtype(column.dtype), (column.name, dtype)


def test_breakdown_rows_follow_the_rules_order() -> None:
    from pcapclass.tables.rules import load_rules

    result = pcapclass.classify_file(REPO / "tests" / "fixtures" / "pcaps" / "exchange_services.pcap")
    order = [*load_rules().ids[1:], "other"]
    services = list(dict.fromkeys(result.breakdown["service"]))
    assert services == [s for s in order if s in services]
