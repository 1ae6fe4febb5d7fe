from tests.conftest import make_user


async def test_register_login_me(client):
    u = await make_user(client)
    r = await client.get("/api/auth/me", headers=u.headers)
    assert r.status_code == 200, r.text
    assert r.json()["data"]["user_id"] == u.id
