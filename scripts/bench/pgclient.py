"""PostgreSQL access for the benchmark harness, through the `psql` client only.

The harness deliberately needs no Python database driver: it loads data with
`COPY ... FROM STDIN`, reads it back with `COPY (SELECT ...) TO STDOUT`, and
polls through one long-lived `psql` process (`Session`) so that frequent
polls cost a round trip, not a new connection.

Every harness connection uses its own role (see `OBSERVER_ROLE`), so that
`pg_stat_statements` can tell the harness's statements apart from the
worker's.
"""

from __future__ import annotations

import json
import subprocess
import urllib.parse
from typing import Iterable, Sequence

#: The role every harness connection uses; the workers connect as the role of
#: DATABASE_URL, so statements are counted per worker role only.
OBSERVER_ROLE = "bench_observer"

_END = "__bench_end_of_result__"


class PsqlError(RuntimeError):
    """A psql invocation failed."""


def with_database(url: str, database: str, user: str | None = None) -> str:
    """The connection URL `url` pointed at another database (and role)."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc
    if user is not None:
        host = netloc.rsplit("@", 1)[-1]
        netloc = f"{urllib.parse.quote(user)}@{host}"
    return urllib.parse.urlunsplit((parts.scheme, netloc, "/" + database, parts.query, parts.fragment))


def literal(value: object) -> str:
    """A SQL literal for a Python value (None, bool, number, str, or list of
    str/float for arrays). Used only for the few statements the harness
    builds itself (joins, settings)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, (list, tuple)):
        return "'" + array_text(value).replace("'", "''") + "'"
    raise TypeError(f"no SQL literal for {type(value).__name__}")


def array_text(items: Sequence[object]) -> str:
    """A PostgreSQL array in text form: `{"a","b"}` for strings, `{0.1,0.2}`
    for numbers."""
    out = []
    for x in items:
        if x is None:
            out.append("NULL")
        elif isinstance(x, str):
            out.append('"' + x.replace("\\", "\\\\").replace('"', '\\"') + '"')
        else:
            out.append(repr(float(x)))
    return "{" + ",".join(out) + "}"


def copy_escape(value: object) -> str:
    """One field of COPY's text format."""
    if value is None:
        return "\\N"
    s = value if isinstance(value, str) else str(value)
    return (
        s.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    )


def copy_unescape(field: str) -> str | None:
    """Reverses COPY's text-format escaping of one field (`\\N` is NULL)."""
    if field == "\\N":
        return None
    if "\\" not in field:
        return field
    out, i = [], 0
    simple = {"t": "\t", "n": "\n", "r": "\r", "b": "\b", "f": "\f", "v": "\v", "\\": "\\"}
    while i < len(field):
        c = field[i]
        if c == "\\" and i + 1 < len(field):
            nxt = field[i + 1]
            out.append(simple.get(nxt, nxt))
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


class Psql:
    """One-shot `psql` invocations against one database URL."""

    def __init__(self, psql: str, url: str):
        self.psql = psql
        self.url = url

    def _args(self, *extra: str) -> list[str]:
        return [self.psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", self.url, *extra]

    def execute(self, sql: str) -> None:
        """Runs SQL (several statements allowed), discarding output."""
        self._run(self._args("-f", "-"), sql, "statement")

    def scalar(self, sql: str) -> str | None:
        """The first column of the first row, as text (None for NULL or no row)."""
        rows = self.rows(sql)
        return rows[0][0] if rows and rows[0] else None

    def rows(self, sql: str) -> list[list[str | None]]:
        """Every row of a query, as lists of text fields (None for NULL)."""
        return list(self.copy_out(sql))

    def copy_in(self, table_and_columns: str, lines: Iterable[str]) -> None:
        """`COPY <table (cols)> FROM STDIN` with already escaped text lines."""
        data = "".join(line + "\n" for line in lines)
        self._run(self._args("-c", f"COPY {table_and_columns} FROM STDIN"), data, "COPY FROM")

    def copy_out(self, query: str) -> Iterable[list[str | None]]:
        """`COPY (<query>) TO STDOUT`: the rows as lists of unescaped fields."""
        out = self._run(self._args("-c", f"COPY ({query}) TO STDOUT"), None, "COPY TO")
        for line in out.splitlines():
            yield [copy_unescape(f) for f in line.split("\t")]

    def copy_out_raw(self, query: str) -> str:
        """`COPY (<query>) TO STDOUT` as raw text (for numeric bulk columns)."""
        return self._run(self._args("-c", f"COPY ({query}) TO STDOUT"), None, "COPY TO")

    def json_rows(self, query: str) -> list[dict]:
        """Rows of `query` as dicts, via `row_to_json` (exact for text arrays,
        NULLs and numbers)."""
        out = self._run(
            self._args("-c", f"COPY (SELECT row_to_json(q)::text FROM ({query}) q) TO STDOUT"),
            None,
            "COPY TO",
        )
        # JSON text holds no raw tab or newline, so COPY's text format only
        # doubled its backslashes.
        return [json.loads(line.replace("\\\\", "\\")) for line in out.splitlines()]

    def _run(self, args: list[str], stdin: str | None, what: str) -> str:
        r = subprocess.run(args, input=stdin, capture_output=True, text=True)
        if r.returncode != 0:
            raise PsqlError(f"psql {what} failed ({r.returncode}): {r.stderr.strip()}")
        return r.stdout


class Session:
    """A long-lived `psql` process for cheap, frequent queries (polling).

    Each query's rows come back as lists of text fields; the end of a result
    is marked with `\\echo`, which psql flushes with the result.
    """

    def __init__(self, psql: str, url: str):
        self.proc = subprocess.Popen(
            [psql, "-X", "-q", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-d", url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
            # Out of the terminal's process group: Ctrl-C reaches the harness,
            # which closes this session itself.
            start_new_session=True,
        )

    def rows(self, sql: str) -> list[list[str]]:
        """Runs one statement; returns its rows (fields split on tabs)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write(sql.rstrip().rstrip(";") + ";\n\\echo " + _END + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError as e:
            raise PsqlError("the polling psql session ended") from e
        out = []
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise PsqlError(f"the polling psql session ended while running: {sql.strip()[:200]}")
            line = line.rstrip("\n")
            if line == _END:
                return out
            if line:
                out.append(line.split("\t"))

    def scalar(self, sql: str) -> str | None:
        """The first field of the first row (None when there is no row or it
        is NULL, which psql prints as an empty string)."""
        rows = self.rows(sql)
        if not rows or rows[0][0] == "":
            return None
        return rows[0][0]

    def close(self) -> None:
        """Ends the psql process."""
        if self.proc.poll() is None:
            try:
                if self.proc.stdin:
                    self.proc.stdin.close()
                self.proc.wait(timeout=5)
            except (subprocess.TimeoutExpired, BrokenPipeError):
                self.proc.kill()
                self.proc.wait()
