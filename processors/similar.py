"""Similar past cases: pure search logic over case embeddings (no I/O here).

A search ranks the past cases that pass the filters (what is known about the new case:
its event code if classified, its district if resolved, a time window) by cosine
similarity. Embeddings are L2-normalised (``models.embedding``), so cosine = dot product.

Two paths, one order:

* ``similar_sql``: a ClickHouse query over ``case_embeddings``. It avoids
  ``cosineDistance``/``dotProduct`` (absent from Debian's 18.16 server) and computes
  ``arraySum(arrayMap((x, y) -> x * y, embedding, [q...]))``, which runs there and on chDB.
* ``rank_in_memory``: the same ranking with numpy, for the hot recent window the worker
  keeps in memory.

Scores are bit-identical between the two: the query vector is sent as the exact float64
value of each float32 component, each product of a float32 and such a float64 is exact in
float64, and both sum the products left to right (ClickHouse's arraySum, numpy's cumsum).
Ties are broken by case_id ascending in both, so the top k is the same list.

Tables (migration 0006 owns them): rows are written to ``case_embeddings_log`` (a
ReplacingMergeTree keyed by the report; ``case_embedding_row`` builds a row,
``embedding_row`` the row of a dispatch decision) and read from the view
``case_embeddings`` (``FINAL``: one row per report, its latest decision's). The search
needs of it::

    case_embeddings (case_id String, input_id String, code String, event_name String,
                     district String, unit String, reported_at DateTime,
                     embedding Array(Float32), ...)

``similar_cases_sql`` is the board's question: for a decision, the most similar past
cases (one report per case), how they were handled (unit, event name; the unit a verdict
named when there is one) and how long that took (hours from the report to its latest
verdict in ``dispatch_feedback``; NULL without a verdict). ``decision_filters`` says what
a decision itself tells the search.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from schemas.records import RECORD_ID_PATTERN, DispatchDecision

CODE_RE = re.compile(r"^[A-Z][0-9]{2}\Z")  # \Z: "$" would let a trailing newline in
_TABLE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?\Z")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_RECORD_ID_RE = re.compile(RECORD_ID_PATTERN.removesuffix("$") + r"\Z")
MAX_K = 1000
EMBEDDINGS_LOG = "case_embeddings_log"  # where rows are written
EMBEDDINGS_VIEW = "case_embeddings"  # what searches read (one row per report)
FEEDBACK_VIEW = "dispatch_feedback"


@dataclass(frozen=True, slots=True)
class SearchFilters:
    """What is known about the new case; None = not known, no filter.

    ``since`` is inclusive and ``until`` exclusive; naive datetimes are taken as UTC (the
    warehouse's DateTime columns are UTC). ``exclude_case_id`` leaves out the new case
    itself when it is already stored.
    """

    code: str | None = None
    district: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    exclude_case_id: str | None = None

    def __post_init__(self) -> None:
        if self.code is not None and not CODE_RE.match(self.code):
            raise ValueError(f"event code {self.code!r} must match {CODE_RE.pattern}")
        for name in ("district", "exclude_case_id"):
            value = getattr(self, name)
            if value is not None and (not value or _CONTROL_RE.search(value)):
                raise ValueError(f"{name} {value!r} must be non-empty, without control chars")
        if self.since and self.until and _utc(self.since) >= _utc(self.until):
            raise ValueError(f"empty time window: since {self.since} >= until {self.until}")


@dataclass(frozen=True, slots=True)
class SimilarCase:
    case_id: str
    code: str
    district: str
    reported_at: datetime  # naive UTC
    score: float


@dataclass(frozen=True)
class CaseWindow:
    """Past cases held in memory: parallel arrays, row i is one case."""

    case_ids: np.ndarray  # str [n]
    codes: np.ndarray  # str [n]
    districts: np.ndarray  # str [n]
    reported_at: np.ndarray  # datetime64[s] [n], UTC
    embeddings: np.ndarray  # float32 [n, d], unit rows

    @classmethod
    def build(
        cls,
        case_ids: Sequence[str],
        codes: Sequence[str],
        districts: Sequence[str],
        reported_at: Sequence[datetime],
        embeddings: np.ndarray,
    ) -> CaseWindow:
        n = len(case_ids)
        emb = np.ascontiguousarray(embeddings, dtype=np.float32)
        if emb.ndim != 2 or emb.shape[0] != n:
            raise ValueError(f"embeddings must be [{n}, d], got {emb.shape}")
        if not (len(codes) == len(districts) == len(reported_at) == n):
            raise ValueError("case_ids, codes, districts and reported_at differ in length")
        return cls(
            np.array(case_ids, dtype=str),
            np.array(codes, dtype=str),
            np.array(districts, dtype=str),
            np.array([_utc(t) for t in reported_at], dtype="datetime64[s]"),
            emb,
        )

    def __len__(self) -> int:
        return int(self.case_ids.shape[0])


def _utc(value: datetime) -> datetime:
    """Naive UTC (aware values converted; naive ones taken as UTC already)."""
    if value.tzinfo is not None:
        return value.astimezone(UTC).replace(tzinfo=None)
    return value


def quote_string(value: str) -> str:
    """A ClickHouse string literal: backslash and quote escaped (both engines' rules)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def datetime_literal(value: datetime) -> str:
    return f"toDateTime('{_utc(value):%Y-%m-%d %H:%M:%S}', 'UTC')"


def query_vector_of(query_vector: Sequence[float] | np.ndarray, dims: int) -> np.ndarray:
    """The query as float32 [dims], finite; what both paths score with."""
    vector = np.asarray(query_vector, dtype=np.float32).reshape(-1)
    if dims < 1 or vector.shape != (dims,):
        raise ValueError(f"query vector has shape {vector.shape}, expected ({dims},)")
    if not np.isfinite(vector).all():
        raise ValueError("query vector has non-finite components")
    return vector


def vector_literal(vector: np.ndarray) -> str:
    # repr of the float64 equal to each float32: the shortest text that parses back to
    # exactly that value, so the server multiplies by what numpy multiplies by.
    return "[" + ", ".join(repr(float(v)) for v in vector.astype(np.float64)) + "]"


def where_clause(filters: SearchFilters, dims: int) -> str:
    # Rows of another dimension would make arrayMap throw: they are skipped, not fatal.
    parts = [f"length(embedding) = {int(dims)}"]
    if filters.code is not None:
        parts.append(f"code = {quote_string(filters.code)}")
    if filters.district is not None:
        parts.append(f"district = {quote_string(filters.district)}")
    if filters.since is not None:
        parts.append(f"reported_at >= {datetime_literal(filters.since)}")
    if filters.until is not None:
        parts.append(f"reported_at < {datetime_literal(filters.until)}")
    if filters.exclude_case_id is not None:
        parts.append(f"case_id != {quote_string(filters.exclude_case_id)}")
    return " AND ".join(parts)


def _check_k(k: int) -> None:
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= MAX_K:
        raise ValueError(f"k must be an int in 1..{MAX_K}, got {k!r}")


def similar_sql(
    query_vector: Sequence[float] | np.ndarray,
    filters: SearchFilters,
    k: int,
    table: str = "case_embeddings",
    dims: int = 64,
) -> str:
    """The top-k query: case_id, code, district, reported_at, score (cosine), best first."""
    _check_k(k)
    if not _TABLE_RE.match(table):
        raise ValueError(f"table {table!r} is not a plain [database.]table identifier")
    vector = query_vector_of(query_vector, dims)
    return (
        "SELECT case_id, code, district, reported_at, "
        f"arraySum(arrayMap((x, y) -> x * y, embedding, {vector_literal(vector)})) AS score "
        f"FROM {table} WHERE {where_clause(filters, dims)} "
        f"ORDER BY score DESC, case_id ASC LIMIT {k}"
    )


def _parse_time(value: Any) -> datetime:
    if isinstance(value, datetime):
        return _utc(value)
    return datetime.strptime(str(value), "%Y-%m-%d %H:%M:%S")


def similar_from_rows(rows: Sequence[Sequence[Any]]) -> list[SimilarCase]:
    """The rows of ``similar_sql`` (either engine) as SimilarCase, in order."""
    return [
        SimilarCase(str(r[0]), str(r[1]), str(r[2]), _parse_time(r[3]), float(r[4])) for r in rows
    ]


def window_mask(window: CaseWindow, filters: SearchFilters) -> np.ndarray:
    mask = np.ones(len(window), dtype=bool)
    if filters.code is not None:
        mask &= window.codes == filters.code
    if filters.district is not None:
        mask &= window.districts == filters.district
    if filters.since is not None:
        mask &= window.reported_at >= np.datetime64(_utc(filters.since), "s")
    if filters.until is not None:
        mask &= window.reported_at < np.datetime64(_utc(filters.until), "s")
    if filters.exclude_case_id is not None:
        mask &= window.case_ids != filters.exclude_case_id
    return mask


def sequential_scores(embeddings: np.ndarray, vector: np.ndarray) -> np.ndarray:
    """Dot products summed left to right in float64, as ClickHouse's arraySum does."""
    if embeddings.shape[0] == 0:
        return np.zeros(0, dtype=np.float64)
    products = embeddings.astype(np.float64) * vector.astype(np.float64)
    return np.cumsum(products, axis=1)[:, -1]


def rank_in_memory(
    query_vector: Sequence[float] | np.ndarray,
    window: CaseWindow,
    filters: SearchFilters,
    k: int,
) -> list[SimilarCase]:
    """``similar_sql``'s answer computed over an in-memory window (same scores, same order)."""
    _check_k(k)
    dims = int(window.embeddings.shape[1])
    vector = query_vector_of(query_vector, dims)
    idx = np.flatnonzero(window_mask(window, filters))
    scores = sequential_scores(window.embeddings[idx], vector)
    if len(idx) > k:
        # Only the rows scoring at least the k-th best can be in the top k (ties included).
        kth = np.partition(scores, len(idx) - k)[len(idx) - k]
        keep = scores >= kth
        idx, scores = idx[keep], scores[keep]
    order = np.lexsort((window.case_ids[idx], -scores))[:k]
    return [
        SimilarCase(
            str(window.case_ids[i]),
            str(window.codes[i]),
            str(window.districts[i]),
            window.reported_at[i].astype("datetime64[s]").item(),
            float(scores[j]),
        )
        for j, i in ((j, idx[j]) for j in order)
    ]


# ------------------------------------------------------------------- stored past cases


@dataclass(frozen=True, slots=True)
class CaseFacts:
    """What a ``case_embeddings_log`` row says of a report besides its vector: what the
    search filters on and what the board shows. Times may be aware or naive UTC."""

    case_id: str
    input_id: str
    input_kind: str
    code: str
    event_name: str
    district: str
    street: str
    unit: str
    auto: bool
    text: str  # masked, as everything stored
    reported_at: datetime
    decided_at: datetime


def case_embedding_row(
    facts: CaseFacts,
    vector: Sequence[float] | np.ndarray,
    model_version: str,
) -> dict[str, Any]:
    """The ``case_embeddings_log`` row of ``facts`` with the embedder's vector (finite;
    stored as float32) and its version."""
    if not model_version:
        raise ValueError("model_version must name the embedder version that made the vector")
    embedding = np.asarray(vector, dtype=np.float32).reshape(-1)
    if embedding.size == 0 or not np.isfinite(embedding).all():
        raise ValueError(f"embedding must be a non-empty finite vector, got {embedding.shape}")
    decided_at = _utc(facts.decided_at)
    return {
        "case_id": facts.case_id,
        "input_id": facts.input_id,
        "input_kind": facts.input_kind,
        "code": facts.code,
        "event_name": facts.event_name,
        "district": facts.district,
        "street": facts.street,
        "unit": facts.unit,
        "auto": int(facts.auto),
        "text": facts.text,
        "reported_at": _utc(facts.reported_at),
        "decided_at": decided_at,
        # The ReplacingMergeTree's version: a later decision of the report wins.
        "decided_at_ms": int(decided_at.replace(tzinfo=UTC).timestamp() * 1000),
        "embedding": [float(x) for x in embedding],
        "model_version": model_version,
    }


def embedding_row(
    decision: DispatchDecision,
    vector: Sequence[float] | np.ndarray,
    model_version: str,
    *,
    case_id: str | None = None,
) -> dict[str, Any]:
    """The ``case_embeddings_log`` row of a decided report: the decision's facts (its text
    is masked already), the report's time (``received_at``: the source's report time, for
    events and appeals alike), the embedder's vector and its version. ``case_id`` is the
    report's case when merging has linked it, else the report's own id."""
    facts = CaseFacts(
        case_id=case_id or decision.input_id,
        input_id=decision.input_id,
        input_kind=decision.input_kind,
        code=decision.code,
        event_name=decision.event_name,
        district=decision.district or "",
        street=decision.street or "",
        unit=decision.unit or "",
        auto=decision.auto,
        text=decision.text,
        reported_at=decision.received_at,
        decided_at=decision.decided_at,
    )
    return case_embedding_row(facts, vector, model_version)


def decision_filters(
    decision: DispatchDecision,
    *,
    window: timedelta = timedelta(days=365),
    by_code: bool = True,
    by_district: bool = True,
) -> SearchFilters:
    """What a decision tells the search: its code and district (when resolved; either
    may be turned off), the ``window`` before the report, and not the report itself."""
    if window <= timedelta(0):
        raise ValueError(f"window must be positive, got {window}")
    reported = _utc(decision.received_at)
    return SearchFilters(
        code=decision.code if by_code and CODE_RE.match(decision.code) else None,
        district=(decision.district or None) if by_district else None,
        since=reported - window,
        until=reported,
        exclude_case_id=decision.input_id,
    )


@dataclass(frozen=True, slots=True)
class PastCase:
    """A similar past case as the board shows it."""

    case_id: str
    input_id: str  # the case's report most similar to the query
    code: str
    event_name: str
    district: str
    unit: str  # the unit a verdict named, else the one decided ("" when none)
    verdict: str  # the latest verdict: confirmed, corrected, or "" when none
    reported_at: datetime  # naive UTC
    hours_to_verdict: float | None  # report -> latest verdict; None without a verdict
    score: float
    text: str | None = None  # the report's masked text, when asked for (``with_text``)


def similar_cases_sql(
    query_vector: Sequence[float] | np.ndarray,
    filters: SearchFilters,
    k: int = 5,
    table: str = EMBEDDINGS_VIEW,
    feedback: str = FEEDBACK_VIEW,
    dims: int = 64,
    *,
    with_text: bool = False,
) -> str:
    """The top-k past cases with how they were handled: case_id, input_id, code,
    event_name, district, unit, verdict, reported_at, hours_to_verdict, score (and the
    report's masked text last, ``with_text``); best first. One report per case (its
    best-scoring one); scores as ``similar_sql``'s.

    The top k are chosen first and only then joined with the verdicts (one join, a
    subquery on the right: what 18.16 accepts). The join's defaults for a report without
    a verdict (0, '') become the decided unit and NULL."""
    _check_k(k)
    for name in (table, feedback):
        if not _TABLE_RE.match(name):
            raise ValueError(f"table {name!r} is not a plain [database.]table identifier")
    vector = query_vector_of(query_vector, dims)
    text = ", text" if with_text else ""
    top = (
        f"SELECT case_id, input_id, code, event_name, district, unit, reported_at{text}, "
        f"arraySum(arrayMap((x, y) -> x * y, embedding, {vector_literal(vector)})) AS score "
        f"FROM {table} WHERE {where_clause(filters, dims)} "
        f"ORDER BY score DESC, case_id ASC, input_id ASC LIMIT 1 BY case_id LIMIT {k}"
    )
    verdicts = (
        "SELECT input_id, count() AS verdicts, max(given_at) AS verdict_at, "
        "argMax(unit, given_at) AS verdict_unit, argMax(verdict, given_at) AS last_verdict "
        f"FROM {feedback} GROUP BY input_id"
    )
    return (
        "SELECT case_id, input_id, code, event_name, district, "
        "if(verdicts > 0, verdict_unit, unit) AS handled_by, "
        "if(verdicts > 0, last_verdict, '') AS verdict, reported_at, "
        "if(verdicts > 0, (toInt64(verdict_at) - toInt64(reported_at)) / 3600, NULL) "
        f"AS hours_to_verdict, score{text} "
        f"FROM ({top}) AS past ANY LEFT JOIN ({verdicts}) AS feedback USING input_id "
        "ORDER BY score DESC, case_id ASC"
    )


def past_cases_from_rows(rows: Sequence[Sequence[Any]]) -> list[PastCase]:
    """The rows of ``similar_cases_sql`` (either engine) as PastCase, in order (with the
    text when the rows carry it)."""
    return [
        PastCase(
            case_id=str(r[0]),
            input_id=str(r[1]),
            code=str(r[2]),
            event_name=str(r[3]),
            district=str(r[4]),
            unit=str(r[5]),
            verdict=str(r[6]),
            reported_at=_parse_time(r[7]),
            hours_to_verdict=None if r[8] is None else float(r[8]),
            score=float(r[9]),
            text=str(r[10]) if len(r) > 10 else None,
        )
        for r in rows
    ]


# ------------------------------------------------------------- a stored report's search


@dataclass(frozen=True, slots=True)
class StoredEmbedding:
    """A report's own row of ``case_embeddings``: what a search for it starts from."""

    case_id: str
    input_id: str
    code: str
    district: str
    reported_at: datetime  # naive UTC
    embedding: tuple[float, ...]


def stored_embedding_sql(input_id: str, table: str = EMBEDDINGS_VIEW) -> str:
    """The stored embedding of one report (at most one row: the view reads FINAL)."""
    if not _RECORD_ID_RE.match(input_id):
        raise ValueError(f"input_id {input_id!r} must match {RECORD_ID_PATTERN}")
    if not _TABLE_RE.match(table):
        raise ValueError(f"table {table!r} is not a plain [database.]table identifier")
    return (
        "SELECT case_id, input_id, code, district, reported_at, embedding "
        f"FROM {table} WHERE input_id = {quote_string(input_id)} LIMIT 1"
    )


# The columns of case_embeddings_log a row is written with (migration 0006).
EMBEDDING_COLUMNS = (
    "case_id", "input_id", "input_kind", "code", "event_name", "district", "street", "unit",
    "auto", "text", "reported_at", "decided_at", "decided_at_ms", "embedding",
    "model_version",
)


def moved_embeddings_sql(input_ids: Sequence[str], table: str = EMBEDDINGS_VIEW) -> str:
    """The stored rows of reports whose case was folded into another (to write them again
    under their new case: the search keeps one report per case)."""
    for input_id in input_ids:
        if not _RECORD_ID_RE.match(input_id):
            raise ValueError(f"input_id {input_id!r} must match {RECORD_ID_PATTERN}")
    ids = ", ".join(quote_string(i) for i in sorted(set(input_ids)))
    return f"SELECT {', '.join(EMBEDDING_COLUMNS)} FROM {table} WHERE input_id IN ({ids})"


def moved_embedding_rows(
    rows: Sequence[Sequence[Any]], case_of: Mapping[str, str]
) -> list[dict[str, Any]]:
    """``moved_embeddings_sql``'s rows (either engine) as rows to write again, each under
    its report's new case. The version (decided_at_ms) is the same, so the later write is
    the one the view keeps."""
    out = []
    for row in rows:
        item = dict(zip(EMBEDDING_COLUMNS, row, strict=True))
        item["case_id"] = case_of[item["input_id"]]
        item["auto"] = int(item["auto"])
        item["decided_at_ms"] = int(item["decided_at_ms"])
        item["reported_at"] = _parse_time(item["reported_at"])
        item["decided_at"] = _parse_time(item["decided_at"])
        item["embedding"] = [float(v) for v in item["embedding"]]
        out.append(item)
    return out


def stored_embedding_from_rows(rows: Sequence[Sequence[Any]]) -> StoredEmbedding | None:
    """The row of ``stored_embedding_sql`` (either engine); None when there is none."""
    if not rows:
        return None
    r = rows[0]
    return StoredEmbedding(
        case_id=str(r[0]),
        input_id=str(r[1]),
        code=str(r[2]),
        district=str(r[3]),
        reported_at=_parse_time(r[4]),
        embedding=tuple(float(x) for x in r[5]),
    )


def stored_filters(
    stored: StoredEmbedding, *, window: timedelta = timedelta(days=365)
) -> SearchFilters:
    """``decision_filters`` for a report known by its stored row: its code when
    classified, its district when resolved, the ``window`` before the report, and not its
    own case (the report and the reports merged with it)."""
    if window <= timedelta(0):
        raise ValueError(f"window must be positive, got {window}")
    return SearchFilters(
        code=stored.code if CODE_RE.match(stored.code) else None,
        district=stored.district or None,
        since=stored.reported_at - window,
        until=stored.reported_at,
        exclude_case_id=stored.case_id or stored.input_id,
    )
