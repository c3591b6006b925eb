from services.deals import service as deals
from services.deals.schemas import DealCreate


async def test_member_creates_a_deal_in_the_default_pipeline(actors, company, admin):
    async with actors.uow("bob") as uow:
        deal = await deals.create(uow, DealCreate(title="First"))
    assert deal.pipeline_id == company.sales_pipeline_id
    assert deal.stage_id == company.sales_stage_ids[0]
    assert admin.execute("select count(*) from public.deals").fetchone()[0] == 1
