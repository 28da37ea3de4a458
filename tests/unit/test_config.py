"""config.from_dict: defaults, MySQL servers, ${ENV} references, validation."""

from __future__ import annotations

import pytest
from tenant_operator import config
from tenant_operator.errors import ConfigError
from tenant_operator.tiers import DEFAULT_TIERS

SERVERS = {"main": {"host": "mysql-main.db", "adminPassword": "pw1"},
           "eu": {"host": "mysql-eu.db", "port": 3307, "userHost": "10.%", "publicHost": "db.eu.example.com"}}


def test_empty_config_has_the_defaults():
    for raw in (None, {}):
        cfg = config.from_dict(raw)
        assert cfg.namespace_prefix == "tenant-"
        assert cfg.default_grace_period == 720 * 3600
        assert cfg.ingress_controller_namespace == "ingress-nginx"
        assert cfg.shared_services == ()
        assert cfg.tiers == DEFAULT_TIERS
        assert cfg.tiers is not DEFAULT_TIERS
        assert cfg.mysql_servers == {} and cfg.mysql_default == ""
        assert cfg.object_storage is None and cfg.rabbitmq is None


def test_mysql_servers_and_explicit_default():
    cfg = config.from_dict({"mysql": {"servers": SERVERS, "default": "eu"}})
    assert set(cfg.mysql_servers) == {"main", "eu"}
    assert cfg.mysql_default == "eu"
    eu = cfg.mysql_server(None)
    assert eu.host == "mysql-eu.db" and eu.port == 3307 and eu.user_host == "10.%"
    assert eu.tenant_host == "db.eu.example.com"
    main = cfg.mysql_server("main")
    assert main.port == 3306 and main.admin_user == "root" and main.admin_password == "pw1"
    assert main.user_host == "%" and main.tenant_host == "mysql-main.db"
    assert "pw1" not in repr(main)


def test_mysql_default_is_the_first_server_by_name():
    cfg = config.from_dict({"mysql": {"servers": SERVERS}})
    assert cfg.mysql_default == "eu"          # sorted: eu < main


def test_unknown_mysql_default_is_rejected():
    with pytest.raises(ConfigError) as info:
        config.from_dict({"mysql": {"servers": SERVERS, "default": "us"}})
    assert info.value.key == "mysql.default"
    assert str(info.value).startswith("config mysql.default:")
    assert "'us'" in str(info.value)


def test_mysql_server_lookup_of_an_unknown_name():
    cfg = config.from_dict({"mysql": {"servers": SERVERS}})
    with pytest.raises(ConfigError, match="mysql.servers.*'nope'.*eu, main"):
        cfg.mysql_server("nope")


def test_mysql_server_without_host_is_rejected():
    with pytest.raises(ConfigError) as info:
        config.from_dict({"mysql": {"servers": {"main": {"port": 3306}}}})
    assert info.value.key == "mysql.servers.main.host"


def test_mysql_port_must_be_an_integer():
    with pytest.raises(ConfigError) as info:
        config.from_dict({"mysql": {"servers": {"main": {"host": "h", "port": "3306"}}}})
    assert info.value.key == "mysql.servers.main.port"


def test_env_references_are_expanded(monkeypatch):
    monkeypatch.setenv("MYSQL_ROOT_PW", "s3cr3t")
    monkeypatch.setenv("RABBIT_PW", "r@bbit")
    monkeypatch.setenv("S3_SECRET", "minio-secret")
    cfg = config.from_dict({
        "mysql": {"servers": {"main": {"host": "db", "adminPassword": "${MYSQL_ROOT_PW}"}}},
        "rabbitmq": {"managementUrl": "http://rabbit:15672/", "adminUser": "admin",
                     "adminPassword": "pre-${RABBIT_PW}-post"},
        "objectStorage": {"endpoint": "http://minio:9000", "secretKey": "${S3_SECRET}"},
    })
    assert cfg.mysql_server("main").admin_password == "s3cr3t"
    assert cfg.rabbitmq.admin_password == "pre-r@bbit-post"
    assert cfg.rabbitmq.management_url == "http://rabbit:15672"
    assert cfg.object_storage.secret_key == "minio-secret"
    assert cfg.object_storage.tenant_endpoint == "http://minio:9000"


def test_env_values_are_not_expanded_twice(monkeypatch):
    monkeypatch.setenv("OUTER", "${INNER}")
    monkeypatch.delenv("INNER", raising=False)
    cfg = config.from_dict({"backupImage": "${OUTER}"})
    assert cfg.backup_image == "${INNER}"


def test_unset_env_reference_names_the_key(monkeypatch):
    monkeypatch.delenv("TENANT_OPERATOR_UNSET_VAR", raising=False)
    with pytest.raises(ConfigError) as info:
        config.from_dict({"mysql": {"servers": {"main": {"host": "db",
                                                          "adminPassword": "${TENANT_OPERATOR_UNSET_VAR}"}}}})
    assert info.value.key == "mysql.servers.main.adminPassword"
    assert "TENANT_OPERATOR_UNSET_VAR" in str(info.value)


def test_unset_env_reference_in_a_list(monkeypatch):
    monkeypatch.delenv("TENANT_OPERATOR_UNSET_VAR", raising=False)
    with pytest.raises(ConfigError) as info:
        config.from_dict({"sharedServices": [{"namespace": "${TENANT_OPERATOR_UNSET_VAR}", "ports": [1]}]})
    assert info.value.key == "sharedServices[0].namespace"


@pytest.mark.parametrize("prefix", ["Tenant-", "tenant_", "-tenant", "a" * 23, "", "tën-"])
def test_bad_namespace_prefix(prefix):
    with pytest.raises(ConfigError) as info:
        config.from_dict({"namespacePrefix": prefix})
    assert info.value.key == "namespacePrefix"


def test_good_namespace_prefix():
    assert config.from_dict({"namespacePrefix": "saas-"}).namespace_prefix == "saas-"


@pytest.mark.parametrize(("value", "seconds"), [("720h", 2592000), ("30d", 2592000), ("1h30m", 5400),
                                                ("45s", 45), (60, 60)])
def test_durations(value, seconds):
    assert config.from_dict({"defaultGracePeriod": value}).default_grace_period == seconds


@pytest.mark.parametrize(("key", "value"), [
    ("defaultGracePeriod", "a month"),
    ("defaultGracePeriod", "1.5h"),
    ("defaultGracePeriod", -1),
    ("defaultGracePeriod", True),
    ("driftInterval", "often"),
    ("deletionPollInterval", "5x"),
])
def test_bad_duration(key, value):
    with pytest.raises(ConfigError) as info:
        config.from_dict({key: value})
    assert info.value.key == key


def test_intervals_are_parsed_to_seconds():
    cfg = config.from_dict({"driftInterval": "2m", "backendResyncInterval": "1h", "deletionPollInterval": 30})
    assert cfg.drift_interval == 120.0
    assert cfg.backend_resync_interval == 3600.0
    assert cfg.deletion_poll_interval == 30.0


def test_tier_override_of_one_key_keeps_the_others():
    cfg = config.from_dict({"tiers": {"premium": {"quota": {"pods": "80"},
                                                  "mysql": {"maxUserConnections": 75}}}})
    premium = cfg.tiers["premium"]
    assert premium["quota"]["pods"] == "80"
    assert premium["mysql"]["maxUserConnections"] == 75
    for key, value in DEFAULT_TIERS["premium"]["quota"].items():
        if key != "pods":
            assert premium["quota"][key] == value
    assert premium["limits"] == DEFAULT_TIERS["premium"]["limits"]
    assert premium["rabbitmq"] == DEFAULT_TIERS["premium"]["rabbitmq"]
    assert cfg.tiers["standard"] == DEFAULT_TIERS["standard"]
    assert DEFAULT_TIERS["premium"]["quota"]["pods"] == "50"      # the table itself is untouched


def test_unknown_tier_is_rejected():
    with pytest.raises(ConfigError) as info:
        config.from_dict({"tiers": {"gold": {"quota": {"pods": "1"}}}})
    assert info.value.key == "tiers.gold"
    assert "standard, premium, business" in str(info.value)


def test_shared_services():
    cfg = config.from_dict({"sharedServices": [{"namespace": "monitoring", "ports": [9090]},
                                               {"cidr": "10.0.0.0/8", "ports": [443, 8443]}]})
    assert cfg.shared_services == (config.SharedService(ports=(9090,), namespace="monitoring"),
                                   config.SharedService(ports=(443, 8443), cidr="10.0.0.0/8"))


@pytest.mark.parametrize(("entry", "key"), [
    ({"ports": [80]}, "sharedServices[0]"),
    ("monitoring", "sharedServices[0]"),
    ({"namespace": "m", "ports": [0]}, "sharedServices[0].ports"),
    ({"namespace": "m", "ports": ["80"]}, "sharedServices[0].ports"),
    ({"namespace": "m", "ports": [70000]}, "sharedServices[0].ports"),
])
def test_bad_shared_services(entry, key):
    with pytest.raises(ConfigError) as info:
        config.from_dict({"sharedServices": [entry]})
    assert info.value.key == key


@pytest.mark.parametrize(("raw", "key"), [
    ({"objectStorage": {"backend": "gcs"}}, "objectStorage.backend"),
    ({"objectStorage": {"backend": "minio"}}, "objectStorage.endpoint"),
    ({"rabbitmq": {"amqpHost": "rabbit"}}, "rabbitmq.managementUrl"),
    ({"workers": "8"}, "workers"),
    ({"backupsBucketRetentionDays": 1.5}, "backupsBucketRetentionDays"),
    ({"backupsBucketRetentionDays": 0}, "backupsBucketRetentionDays"),
    ({"archiveRetentionDays": -1}, "archiveRetentionDays"),
    ({"archiveRetentionDays": "7y"}, "archiveRetentionDays"),
])
def test_other_invalid_keys(raw, key):
    assert_refused(raw, key)


def assert_refused(raw: dict, key: str) -> None:
    """The config is refused with an error naming `key`."""
    with pytest.raises(ConfigError) as info:
        config.from_dict(raw)
    assert info.value.key == key
    assert str(info.value).startswith(f"config {key}:")


def test_s3_backend_needs_no_endpoint():
    cfg = config.from_dict({"objectStorage": {"backend": "s3", "region": "eu-west-1"}})
    assert cfg.object_storage.backend == "s3" and cfg.object_storage.region == "eu-west-1"


def test_archive_retention_defaults_to_seven_years():
    assert config.from_dict({}).archive_retention_days == 2555
    assert config.from_dict({"archiveRetentionDays": 30}).archive_retention_days == 30


# --- several RabbitMQ servers and object stores ---------------------------------------------------

RABBITS = {"a": {"managementUrl": "http://rabbit-a:15672/", "amqpHost": "rabbit-a", "adminUser": "ops-a"},
           "b": {"managementUrl": "http://rabbit-b:15672", "amqpHost": "rabbit-b", "amqpPort": 5673,
                 "adminUser": "ops-b", "weight": 2}}
STORES = {"s1": {"endpoint": "http://minio-1:9000", "accessKey": "root1"},
          "s2": {"backend": "s3", "region": "eu-west-1", "weight": 0}}


def test_single_server_forms_are_one_server_named_default():
    cfg = config.from_dict({"rabbitmq": {"managementUrl": "http://rabbit:15672", "amqpHost": "rabbit"},
                            "objectStorage": {"endpoint": "http://minio:9000"}})
    assert list(cfg.rabbitmq_servers) == ["default"] and cfg.rabbitmq_default == "default"
    assert list(cfg.object_storage_servers) == ["default"] and cfg.object_storage_default == "default"
    assert cfg.rabbitmq is cfg.rabbitmq_servers["default"] and cfg.rabbitmq.weight == 1
    assert cfg.object_storage is cfg.object_storage_servers["default"]
    assert cfg.rabbitmq_server(None).amqp_host == "rabbit"


def test_rabbitmq_and_object_storage_servers():
    cfg = config.from_dict({"rabbitmq": {"servers": RABBITS, "default": "b"}, "objectStorage": {"servers": STORES}})
    assert cfg.rabbitmq_default == "b" and cfg.rabbitmq is cfg.rabbitmq_servers["b"]
    a, b = cfg.rabbitmq_server("a"), cfg.rabbitmq_server("b")
    assert (a.name, a.management_url, a.amqp_port, a.weight) == ("a", "http://rabbit-a:15672", 5672, 1)
    assert (b.name, b.amqp_port, b.weight) == ("b", 5673, 2)
    assert cfg.object_storage_default == "s1"                # first by name
    assert cfg.object_storage_server("s2").region == "eu-west-1" and cfg.object_storage_server("s2").weight == 0
    # Every server's admin is reserved.
    assert {"ops-a", "ops-b", "root1"} <= set(cfg.reserved_user_patterns())


def test_mysql_server_weight():
    cfg = config.from_dict({"mysql": {"servers": {"m": {"host": "db", "weight": 4}, "n": {"host": "db2"}}}})
    assert cfg.mysql_servers["m"].weight == 4 and cfg.mysql_servers["n"].weight == 1


@pytest.mark.parametrize(("raw", "key"), [
    ({"rabbitmq": {"servers": {"a": {"amqpHost": "x"}}}}, "rabbitmq.servers.a.managementUrl"),
    ({"rabbitmq": {"servers": {"a": {**RABBITS["a"], "weight": -1}}}}, "rabbitmq.servers.a.weight"),
    ({"rabbitmq": {"servers": {"a": {**RABBITS["a"], "weight": "heavy"}}}}, "rabbitmq.servers.a.weight"),
    ({"rabbitmq": {"servers": {"a": {**RABBITS["a"], "amqpPort": "x"}}}}, "rabbitmq.servers.a.amqpPort"),
    ({"rabbitmq": {"servers": RABBITS, "default": "c"}}, "rabbitmq.default"),
    ({"rabbitmq": {"servers": RABBITS, "managementUrl": "http://x"}}, "rabbitmq.managementUrl"),
    ({"rabbitmq": {"servers": {"Bad_Name": RABBITS["a"]}}}, "rabbitmq.servers.Bad_Name"),
    ({"rabbitmq": {"servers": {"a": "http://x"}}}, "rabbitmq.servers.a"),
    ({"rabbitmq": {"servers": {}}}, "rabbitmq.servers"),
    ({"objectStorage": {"servers": {"s": {"backend": "gcs"}}}}, "objectStorage.servers.s.backend"),
    ({"objectStorage": {"servers": {"s": {"backend": "minio"}}}}, "objectStorage.servers.s.endpoint"),
    ({"objectStorage": {"servers": STORES, "default": "s3"}}, "objectStorage.default"),
    ({"mysql": {"servers": {"m": {"host": "db", "weight": -2}}}}, "mysql.servers.m.weight"),
    ({"rabbitmq": {"managementUrl": "http://x", "weight": -1}}, "rabbitmq.weight"),
])
def test_bad_server_settings_name_the_field(raw, key):
    assert_refused(raw, key)


def test_server_lookup_of_an_unknown_name():
    cfg = config.from_dict({"rabbitmq": {"servers": RABBITS}})
    with pytest.raises(ConfigError, match=r"rabbitmq.servers.*'c'.*a, b"):
        cfg.rabbitmq_server("c")
    with pytest.raises(ConfigError, match=r"objectStorage.servers.*none configured"):
        cfg.object_storage_server("x")
