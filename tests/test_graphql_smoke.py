async def test_bob_reads_his_profile_and_deals_over_http(api):
    body = await api.query("{ me { user { email } } deals(first: 2) { totalCount edges { node { title } } } }")
    assert body == {"data": {"me": {"user": {"email": "bob@example.com"}}, "deals": {"totalCount": 0, "edges": []}}}


async def test_a_request_without_a_token_is_refused_with_no_data(api):
    response = await api.post("{ me { user { email } } }", as_=None)
    assert response.status_code == 401
    assert response.json() == {"data": None, "errors": [
        {"message": "missing bearer token", "extensions": {"code": "UNAUTHENTICATED"}}]}
