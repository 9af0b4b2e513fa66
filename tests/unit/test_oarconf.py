from oarcloud_lib.tools import oarconf

TEXT = '''# comment
DB_HOSTNAME="127.0.0.1"
DB_BASE_PASSWD=""
#PROLOGUE_EXEC_FILE="/path/to/prog"
JOB_RESOURCE_MANAGER_PROPERTY_DB_FIELD="cpuset"
'''


def test_parse_ignores_comments():
    values = oarconf.parse(TEXT)
    assert values["DB_HOSTNAME"] == "127.0.0.1"
    assert values["DB_BASE_PASSWD"] == ""
    assert "PROLOGUE_EXEC_FILE" not in values


def test_update_replaces_appends_and_comments_out():
    new = oarconf.update(TEXT, {"DB_BASE_PASSWD": "s3", "PROLOGUE_EXEC_FILE": "/x/prologue",
                                "JOB_RESOURCE_MANAGER_PROPERTY_DB_FIELD": None})
    values = oarconf.parse(new)
    assert values["DB_BASE_PASSWD"] == "s3"
    assert values["PROLOGUE_EXEC_FILE"] == "/x/prologue"
    assert "JOB_RESOURCE_MANAGER_PROPERTY_DB_FIELD" not in values
    assert '#JOB_RESOURCE_MANAGER_PROPERTY_DB_FIELD="cpuset"' in new
    # idempotent
    assert oarconf.update(new, {"DB_BASE_PASSWD": "s3", "PROLOGUE_EXEC_FILE": "/x/prologue",
                                "JOB_RESOURCE_MANAGER_PROPERTY_DB_FIELD": None}) == new


def test_update_refuses_shell_in_values():
    import pytest
    from oarcloud_lib.errors import Refused
    for bad in ['a"b', "$(id)", "`id`", "a\nb"]:
        with pytest.raises(Refused):
            oarconf.update(TEXT, {"DB_HOSTNAME": bad})
