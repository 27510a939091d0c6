"""Reading the SQL files of the rules job: the shared views (one file, several statements)
and the rule files (one `INSERT INTO journey_triggers` each, with a header comment).

Pure Python (no JVM), so that file problems are reported without starting Flink and the
line bookkeeping is unit tested. Flink numbers lines within the statement it parses; the
statements built here keep every line where it is in the file, so Flink's line numbers
are the file's line numbers."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

SINK = "journey_triggers"
RULE_ID = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
REQUIRED_HEADERS = ("rule", "detects", "action", "description")
_INSERT = re.compile(rf"\bINSERT\s+INTO\s+{SINK}\b", re.IGNORECASE)
_HEADER = re.compile(r"^--\s*([a-z_]+):\s*(.*)$")
_CONTINUATION = re.compile(r"^--\s{2,}(\S.*)$")
_LINE_COL = re.compile(r"[Ll]ine (\d+), column (\d+)")


def display(path: Path) -> str:
    """A path as people type it: relative to the working directory when inside it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


@dataclass(frozen=True)
class SqlProblem:
    """Something wrong in a SQL file, in the form editors and CI logs understand."""

    path: Path
    line: int
    message: str

    def __str__(self) -> str:
        return f"{display(self.path)}:{self.line}: {self.message}"


@dataclass(frozen=True)
class Statement:
    """One statement of a file; `text` has the file's line breaks before it, so line N of
    `text` is line N of the file."""

    path: Path
    line: int  # first line of the statement in the file
    text: str


@dataclass(frozen=True)
class Rule:
    rule_id: str
    path: Path
    headers: dict[str, str]
    query: Statement  # the SELECT after INSERT INTO journey_triggers, lines kept
    problems: list[SqlProblem] = field(default_factory=list)

    @property
    def view(self) -> str:
        """Name of the temporary view that holds this rule's triggers."""
        return f"rule_{self.rule_id}"

    @property
    def cases_path(self) -> Path:
        return self.path.with_suffix(".yaml")

    def view_statement(self) -> str:
        """CREATE TEMPORARY VIEW for the rule's query, with its lines where they are in
        the file (the CREATE words go on line 1, in place of the header comment)."""
        return f"CREATE TEMPORARY VIEW {self.view} AS " + self.query.text


def _blank_out(text: str) -> str:
    """Same line structure and columns, no content: keeps Flink's positions = file's."""
    return re.sub(r"[^\n]", " ", text)


def _strip_terminator(text: str) -> str:
    """Drop one trailing `;` (and comments/blank space after it)."""
    lines = text.rstrip().split("\n")
    while lines and (not lines[-1].strip() or lines[-1].strip().startswith("--")):
        lines.pop()
    if lines and lines[-1].rstrip().endswith(";"):
        lines[-1] = lines[-1].rstrip()[:-1]
    return "\n".join(lines)


def _in_comment(text: str, pos: int) -> bool:
    line_start = text.rfind("\n", 0, pos) + 1
    return "--" in text[line_start:pos]


def parse_headers(text: str) -> dict[str, str]:
    """`-- key: value` lines of the leading comment block; indented `--   more` lines
    continue the previous value."""
    headers: dict[str, str] = {}
    last = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if not line.startswith("--"):
            break
        cont = _CONTINUATION.match(line)
        match = _HEADER.match(line)
        if match and not (cont and last):
            last = match.group(1)
            headers[last] = match.group(2).strip()
        elif cont and last:
            headers[last] = f"{headers[last]} {cont.group(1).strip()}".strip()
    return headers


def read_rule(path: Path) -> Rule:
    """Parse one rule file; problems found without Flink are listed in Rule.problems."""
    text = path.read_text()
    rule_id = path.stem
    headers = parse_headers(text)
    problems = []
    if not RULE_ID.match(rule_id):
        problems.append(SqlProblem(path, 1, f"file name {path.name!r}: a rule id is lower "
                                            "case letters, digits and _ (e.g. soft_bounces.sql)"))
    missing = [h for h in REQUIRED_HEADERS if not headers.get(h)]
    if missing:
        problems.append(SqlProblem(path, 1, "header comment lacks "
                                   + ", ".join(f"'-- {h}: ...'" for h in missing)))
    elif headers["rule"] != rule_id:
        problems.append(SqlProblem(path, 1, f"'-- rule: {headers['rule']}' must match the "
                                            f"file name ({rule_id})"))
    inserts = [m for m in _INSERT.finditer(text) if not _in_comment(text, m.start())]
    if len(inserts) != 1:
        problems.append(SqlProblem(path, 1, f"a rule file holds exactly one "
                                            f"'INSERT INTO {SINK} SELECT ...' "
                                            f"(found {len(inserts)})"))
        query = Statement(path, 1, "SELECT 1")
    else:
        end = inserts[0].end()
        line = text.count("\n", 0, end) + 1
        query = Statement(path, line, _blank_out(text[:end]) + _strip_terminator(text[end:]))
    return Rule(rule_id, path, headers, query, problems)


def read_rules(rules_dir: Path, only: list[str] | None = None) -> list[Rule]:
    """Every sql/rules/*.sql in name order (the job's plan order), or the `only` ids."""
    rules = [read_rule(p) for p in sorted(Path(rules_dir).glob("*.sql"))]
    if only:
        unknown = sorted(set(only) - {r.rule_id for r in rules})
        if unknown:
            raise FileNotFoundError(f"no rule file for {', '.join(unknown)} in {rules_dir}")
        rules = [r for r in rules if r.rule_id in only]
    return rules


def _is_code(line: str) -> bool:
    return bool(line.strip()) and not line.strip().startswith("--")


def split_statements(path: Path) -> list[Statement]:
    """Statements of a multi-statement file (the shared views). A statement ends with a
    `;` at the end of a line (outside `--` comments); each keeps its file line numbers."""
    text = Path(path).read_text()
    lines = text.split("\n")
    statements: list[Statement] = []
    first = 0  # first line (0-based) of the statement being read
    for i, line in enumerate(lines):
        code = line.split("--", 1)[0].rstrip()
        if not code.endswith(";"):
            continue
        chunk = [*lines[first:i], code[:-1]]
        if any(_is_code(ln) for ln in chunk):
            start = first + next(j for j, ln in enumerate(chunk) if _is_code(ln))
            statements.append(Statement(Path(path), start + 1,
                                        "\n" * first + "\n".join(chunk)))
        first = i + 1
    if any(_is_code(ln) for ln in lines[first:]):
        raise ValueError(f"{path}: the last statement lacks its closing ';'")
    return statements


def problem_from_flink(statement: Statement, message: str) -> SqlProblem:
    """Flink's error for a statement, at the file line it names (else the statement's)."""
    match = _LINE_COL.search(message)
    line = int(match.group(1)) if match else statement.line
    return SqlProblem(statement.path, line, message)


def flink_message(exc: BaseException) -> str:
    """The readable part of a Flink/py4j exception: the messages of the cause chain,
    without Java stack frames."""
    text = str(exc)
    kept, seen = [], set()
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("at ") or line.startswith("...") or line in seen:
            continue
        if line.startswith(("py4j.", "Traceback", "File ", "pyflink.", "An error occurred")):
            continue
        line = re.sub(r"^(Caused by: )?:? ?(org\.apache\.[\w.$]+|java\.[\w.$]+): ", "", line)
        if not line or line == ":" or any(line in k for k in kept):
            continue
        seen.add(line)
        kept.append(line)
    # The first messages say what is wrong; the rest repeats them with less context.
    return " | ".join(kept[:3])[:1500] or type(exc).__name__
