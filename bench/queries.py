"""What each system is asked, side by side: the same answer from PipeCD's GraphQL, PostGraphile's GraphQL and the
hand-written SQL floor. Pages are 50 deals, newest first, with their stage, person, organization and owner names."""

from __future__ import annotations

import json

from services.search.schemas import SearchType
from services.search.service import search_sql

PAGE = 50

PIPECD_DEALS_PAGE = f"""{{ deals(first: {PAGE}) {{ edges {{ node {{ id title value currency status
  stage {{ name }} person {{ name }} organization {{ name }} owner {{ displayName }} }} }} }} }}"""

POSTGRAPHILE_DEALS_PAGE = f"""{{ allDeals(first: {PAGE}, orderBy: [CREATED_AT_DESC, PRIMARY_KEY_DESC]) {{ nodes {{
  rowId title value currency status stageByStageIdAndPipelineId {{ name }} personByPersonId {{ name }}
  organizationByOrganizationId {{ name }} userProfileByOwnerId {{ displayName }} }} }} }}"""

FLOOR_DEALS_PAGE = f"""
select coalesce(json_agg(x), '[]')::text from (
  select d.id, d.title, d.value, d.currency, d.status, s.name as stage, p.name as person, o.name as organization,
         u.display_name as owner
  from public.deals d
  left join public.stages s on s.id = d.stage_id
  left join public.persons p on p.id = d.person_id
  left join public.organizations o on o.id = d.organization_id
  left join public.user_profiles u on u.id = d.owner_id
  order by d.created_at desc, d.id desc
  limit {PAGE}) x
"""

PIPECD_DEAL = """query ($id: UUID!) { deal(id: $id) { id title value currency status stage { name }
  person { name } organization { name } notes { body createdAt } activities { subject dueDate done } } }"""

POSTGRAPHILE_DEAL = """query ($id: UUID!) { dealByRowId(rowId: $id) { rowId title value currency status
  stageByStageIdAndPipelineId { name } personByPersonId { name } organizationByOrganizationId { name }
  notesByDealId(orderBy: [CREATED_AT_DESC]) { nodes { body createdAt } }
  activitiesByDealId { nodes { subject dueDate done } } } }"""

FLOOR_DEAL = """
select json_build_object(
  'id', d.id, 'title', d.title, 'value', d.value, 'currency', d.currency, 'status', d.status,
  'stage', (select s.name from public.stages s where s.id = d.stage_id),
  'person', (select p.name from public.persons p where p.id = d.person_id),
  'organization', (select o.name from public.organizations o where o.id = d.organization_id),
  'notes', (select coalesce(json_agg(json_build_object('body', n.body, 'created_at', n.created_at)
                                     order by n.created_at desc), '[]') from public.notes n where n.deal_id = d.id),
  'activities', (select coalesce(json_agg(json_build_object('subject', a.subject, 'due_date', a.due_date,
                                                            'done', a.done) order by a.due_date), '[]')
                 from public.activities a where a.deal_id = d.id))::text
from public.deals d where d.id = %s
"""

PIPECD_SEARCH = """query ($q: String!) { search(query: $q, first: 10) { id type title context score } }"""


def floor_search(query: str, limit: int) -> tuple[str, dict[str, object]]:
    """The search PipeCD runs (the same SQL, built by the same function), returned as JSON."""
    sql, params = search_sql(" ".join(query.split()).lower(), list(SearchType), limit)
    return f"select coalesce(json_agg(h), '[]')::text from ({sql}) h", params


PIPECD_CREATE_DEAL = """mutation ($input: DealCreateInput!) { createDeal(input: $input) { id version } }"""

# The rows a created deal leaves: the deal, its first stage-history entry, its audit row and its event — as plain
# statements with a client-made id, sent in one pipeline (each row's policy must see the deal: one statement per row).
# The deal's insert writes its first stage-history entry itself (private.record_first_stage).
FLOOR_CREATE_DEAL = [
    "insert into public.deals (id, title, value, pipeline_id, stage_id) values (%(id)s, %(title)s, %(value)s,"
    " %(pipeline_id)s, %(stage_id)s)",
    "select private.append_audit('deal.create', 'deal', %(id)s, jsonb_build_object('after', (select to_jsonb(d)"
    " from public.deals d where d.id = %(id)s)))",
    "select private.emit_events(jsonb_build_array(jsonb_build_object('name', 'crm/deal.created', 'data',"
    " jsonb_build_object('deal_id', %(id)s::uuid, 'pipeline_id', %(pipeline_id)s::uuid, 'stage_id',"
    " %(stage_id)s::uuid, 'value', %(value)s::numeric))))",
]


def graphql(query: str, variables: dict[str, object] | None = None) -> str:
    return json.dumps({"query": query, **({"variables": variables} if variables else {})})
