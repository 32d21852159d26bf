"""Streaming exports of the analytics tables, never the whole table in memory.

- CSV: a ``StreamingHttpResponse`` over the rows as they come from a server-side cursor (``csv`` writing into a
  one-line buffer), so the first bytes leave before the last row is read.
- XLSX: ``xlsxwriter`` in ``constant_memory`` mode writes each row to a temporary file as it comes (the
  workbook is never held in memory); the finished file is then streamed from disk in chunks and removed.
"""

from __future__ import annotations

import csv
import os
import tempfile
from collections.abc import Iterable, Iterator
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import xlsxwriter
from django.http import FileResponse, StreamingHttpResponse

CSV_CONTENT_TYPE = "text/csv; charset=utf-8"
XLSX_CONTENT_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
FORMATS = ("csv", "xlsx")


class _Line:
    """A file-like object whose ``write`` returns what it was given (the csv module writes one row at a time)."""

    def write(self, value: str) -> str:
        return value


def _csv_lines(columns: list[str], rows: Iterable[list[Any]]) -> Iterator[str]:
    writer = csv.writer(_Line())
    yield "\ufeff" + writer.writerow(columns)  # a BOM: spreadsheet programs then read UTF-8
    for row in rows:
        yield writer.writerow(["" if v is None else v for v in row])


def csv_response(columns: list[str], rows: Iterable[list[Any]], *, filename: str) -> StreamingHttpResponse:
    response = StreamingHttpResponse(_csv_lines(columns, rows), content_type=CSV_CONTENT_TYPE)
    response["Content-Disposition"] = f'attachment; filename="{filename}.csv"'
    return response


def _cell(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, datetime):
        return value.replace(tzinfo=None).isoformat(sep=" ", timespec="seconds")
    if isinstance(value, date):
        return value.isoformat()
    return value


def write_xlsx(path: str, columns: list[str], rows: Iterable[list[Any]], *, sheet: str) -> int:
    """Write the rows to an XLSX file at ``path`` row by row; returns the rows written."""
    workbook = xlsxwriter.Workbook(path, {"constant_memory": True, "tmpdir": os.path.dirname(path)})
    try:
        worksheet = workbook.add_worksheet(sheet[:31])
        bold = workbook.add_format({"bold": True})
        worksheet.write_row(0, 0, columns, bold)
        count = 0
        for count, row in enumerate(rows, start=1):
            worksheet.write_row(count, 0, [_cell(v) for v in row])
        worksheet.freeze_panes(1, 0)
    finally:
        workbook.close()
    return count


def xlsx_response(columns: list[str], rows: Iterable[list[Any]], *, filename: str, sheet: str) -> FileResponse:
    fd, path = tempfile.mkstemp(prefix="analytics-", suffix=".xlsx")
    os.close(fd)
    try:
        write_xlsx(path, columns, rows, sheet=sheet)
        handle = open(path, "rb")  # noqa: SIM115 - FileResponse closes it when the response is done
    finally:
        os.unlink(path)  # the open handle keeps the file readable until FileResponse closes it
    return FileResponse(handle, as_attachment=True, filename=f"{filename}.xlsx", content_type=XLSX_CONTENT_TYPE)
