import pytest

from example_project.users.domain import UserDomain


@pytest.mark.django_db
def test_create_user_round_trip():
    domain = UserDomain()
    result = domain.process_command(domain.create_command("create-user", {"name": "A", "email": "a@x.io"}))
    assert result.version == 1
    assert domain.statemgr.fetch("user", result.aggregate_id).name == "A"
