"""One search across persons, organizations, deals and leads, ranked by trigram similarity.

RLS hides what the caller may not see, and types the caller has no read permission for are skipped, so a
hit is always something the caller could open.
"""

from __future__ import annotations

from services.kernel.errors import Forbidden, Invalid
from services.kernel.inputs import text_argument
from services.kernel.permissions import Perm, requires
from services.kernel.schemas import MAX_SEARCH_TEXT, escape_like
from services.kernel.uow import UnitOfWork
from services.search.schemas import SearchHit, SearchType

DEFAULT_LIMIT = 10
MAX_LIMIT = 50

_READ = {
    SearchType.PERSON: Perm.CONTACTS_READ,
    SearchType.ORGANIZATION: Perm.CONTACTS_READ,
    SearchType.DEAL: Perm.DEALS_READ,
    SearchType.LEAD: Perm.LEADS_READ,
}

# Per type: table, title expression, context expression. All read `t.search_text` (lowercased, trigram-indexed).
_SOURCES = {
    SearchType.PERSON: (
        "persons", "t.name",
        "concat_ws(' · ', t.emails[1], t.job_title)",
    ),
    SearchType.ORGANIZATION: ("organizations", "t.name", "coalesce(t.domain, '')"),
    SearchType.DEAL: (
        "deals", "t.title",
        "concat_ws(' · ', t.status || ' deal', t.value::text || ' ' || t.currency)",
    ),
    SearchType.LEAD: (
        "leads", "t.title",
        "concat_ws(' · ', t.status || ' lead', t.contact_name, t.contact_email, t.organization_name)",
    ),
}


@requires(None)
async def search(
    uow: UnitOfWork, query: str, *, types: list[SearchType] | None = None, limit: int = DEFAULT_LIMIT
) -> list[SearchHit]:
    """Find records by name, email, domain or title. Each type needs its own read permission
    (contacts:read for persons and organizations, deals:read, leads:read); unreadable types are skipped."""
    if len(query) > MAX_SEARCH_TEXT:
        raise Invalid(f"search text must be at most {MAX_SEARCH_TEXT} characters", field="query")
    query = text_argument(query, "query")
    text = " ".join(query.split()).lower()
    if len(text) < 2:
        raise Invalid("search needs at least 2 characters", field="query")
    if not 1 <= limit <= MAX_LIMIT:
        raise Invalid(f"limit must be between 1 and {MAX_LIMIT}", field="limit")
    wanted = list(dict.fromkeys(types or list(SearchType)))
    readable = [t for t in wanted if uow.principal.can(_READ[t])]
    if not readable:
        raise Forbidden("no permission to read any of the requested record types")
    sql, params = search_sql(text, readable, limit)
    rows = await uow.all(sql, params)
    return [SearchHit(id=r["id"], type=r["type"], title=r["title"], context=r["context"] or "",
                      score=round(float(r["score"]), 4)) for r in rows]


def search_sql(text: str, kinds: list[SearchType], limit: int) -> tuple[str, dict[str, object]]:
    """The ranked search over `kinds` for normalized `text`, with its parameters (named: each is sent once, however
    often the statement uses it, which keeps the statement's conversion cached by the driver).

    Two phases in one statement. First the rows that start with or contain the text, per type. A row that does
    not contain the text scores at most 1 (its word similarity; the bonuses need the text in it), so when `limit`
    of those rows score above 1 they are the answer and no similar-word read could change it. Otherwise the
    search runs again with the similar words (typos) read too; its answer holds the first phase's rows."""
    sql = f"""
        with found as materialized (select * from ({_per_kind(kinds, resemble=False)}) f),
             enough as materialized (select count(*) >= %(limit)s as yes from found where score > 1)
        select * from (
            select * from found where (select yes from enough)
            union all
            select * from ({_per_kind(kinds, resemble=True)}) m where not (select yes from enough)
        ) hits
        order by score desc, title, id
        limit %(limit)s
    """
    params: dict[str, object] = {"text": text, "contains": "%" + escape_like(text) + "%",
                                 "prefix": escape_like(text) + "%", "limit": limit}
    return " ".join(sql.split()), params  # (its literals hold no runs of spaces)


def _per_kind(kinds: list[SearchType], *, resemble: bool) -> str:
    """One branch per type, each its best `limit` hits, merged (unordered)."""
    branches = []
    for kind in kinds:
        table, title, context = _SOURCES[kind]
        # Candidates come from private.search_candidates, which can use the trigram indexes (under RLS the
        # planner may not), reads a capped number of them whatever the table's size, and applies the same
        # visibility rule; the rows are then read under RLS as usual, by primary key.
        branches.append(
            f"""
            (select '{kind.value}' as type, t.id, {title} as title, {context} as context, c.score
             from private.search_candidates('{kind.value}', %(text)s, %(contains)s, %(prefix)s, %(limit)s,
                                            {str(resemble).lower()}) c
             join public.{table} t on t.id = c.id
             order by c.score desc, t.id
             limit %(limit)s)
            """
        )
    return " union all ".join(branches)
