"""Streamed exports (CSV and JSON lines) shared by the admin API's export endpoints.

Records are rendered one at a time as they arrive from the store, so an export of
any size uses constant memory. CSV cells that a spreadsheet would evaluate as a
formula are defused (CSV injection), and nested values are written as compact JSON.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any, Literal

from fastapi.responses import StreamingResponse

ExportFormat = Literal["csv", "jsonl"]


def csv_cell(value: Any) -> str:
    """A cell that spreadsheets won't evaluate as a formula (CSV injection)."""
    if isinstance(value, dict | list):
        value = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


async def jsonl_lines(records: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    """One JSON document per line."""
    async for record in records:
        yield (json.dumps(record, ensure_ascii=False) + "\n").encode()


async def csv_lines(
    records: AsyncIterator[dict[str, Any]], columns: Sequence[str]
) -> AsyncIterator[bytes]:
    """A header row of `columns`, then one row per record (CRLF line ends, RFC 4180)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(columns)
    yield buffer.getvalue().encode()
    async for record in records:
        buffer.seek(0)
        buffer.truncate()
        writer.writerow([csv_cell(record.get(c)) for c in columns])
        yield buffer.getvalue().encode()


def streamed_export(
    records: AsyncIterator[dict[str, Any]],
    *,
    format: ExportFormat,
    columns: Sequence[str],
    filename: str,
) -> StreamingResponse:
    """The streamed response of an export, as a download named `filename.csv|.jsonl`."""
    if format == "csv":
        return StreamingResponse(
            csv_lines(records, columns),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{filename}.csv"'},
        )
    return StreamingResponse(
        jsonl_lines(records),
        media_type="application/jsonl",
        headers={"Content-Disposition": f'attachment; filename="{filename}.jsonl"'},
    )
