"""config.py: each setting declared once (variable, default, rules, meaning), read only there,
and the configuration reference generated from the declarations."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest

import config
from config import ConfigError, Settings, declarations
from local.processes import ROOT

SECRET = "whsec_c2VjcmV0"


def test_the_reference_is_what_the_declarations_generate():
    page = ROOT / "docs" / "configuration.md"
    assert page.is_file() and page.read_text() == config.reference(), (
        f"docs/configuration.md differs from the declarations in config.py: run `{config.REFERENCE_COMMAND}`"
    )


def test_the_reference_names_every_variable_once():
    reference = config.reference()
    for declaration in declarations().values():
        assert reference.count(f"| `{declaration.variable}` |") == 1, declaration.variable


def test_every_setting_has_a_variable_of_its_own_and_a_meaning():
    found = list(declarations().values())
    assert len({d.variable for d in found}) == len(found)
    assert all(d.meaning.strip() and d.accepts.strip() for d in found)


def test_an_empty_environment_gives_the_declared_defaults():
    assert Settings.from_env({}) == Settings()
    assert Settings.from_env(dict.fromkeys((d.variable for d in declarations().values()), "  ")) == Settings()


def written(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(str(item) for item in value)
    return str(value)


@pytest.mark.parametrize("name", [name for name in declarations() if getattr(Settings, name) not in ("", ())])
def test_each_default_passes_its_own_rules(name):
    """A default the setting would refuse from the environment is a declaration out of step."""
    declaration = declarations()[name]
    default = getattr(Settings, name)
    assert declaration.read(declaration.variable, written(default)) == default


@pytest.mark.parametrize(
    "env, message",
    [
        ({"CALLBACK_TIMEOUT": "abc"}, "CALLBACK_TIMEOUT must be an integer, not 'abc'"),
        ({"CALLBACK_TIMEOUT": "0"}, "CALLBACK_TIMEOUT must be at least 1"),
        ({"MAX_BODY_BYTES": "1023"}, "MAX_BODY_BYTES must be at least 1024"),
        ({"LEASE_SECONDS": "1"}, "LEASE_SECONDS must be at least 2"),
        ({"REDIS_MIN_REPLICAS": "-1"}, "REDIS_MIN_REPLICAS must be at least 0"),
        ({"PORT": "65536"}, "PORT must be at most 65535"),
        ({"WEB_CONCURRENCY": "0"}, "WEB_CONCURRENCY must be at least 1"),
        ({"PLIVO_TIMEOUT": "soon"}, "PLIVO_TIMEOUT must be a number, not 'soon'"),
        ({"RATE_LIMIT_API": "0/5"}, "RATE_LIMIT_API must be COUNT/SECONDS, like 300/5, not '0/5'"),
        ({"RATE_LIMIT_CALLS": "2"}, "RATE_LIMIT_CALLS must be COUNT/SECONDS, like 300/5, not '2'"),
        ({"CALLBACK_METHOD": "PUT"}, "CALLBACK_METHOD must be POST or GET, not 'PUT'"),
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT must be text or json, not 'xml'"),
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL must be info, debug, warning, error or critical, not 'loud'"),
        ({"CALLBACK_HOLD": "36"}, "CALLBACK_HOLD must be 0 to 35 seconds (Plivo waits 40 s for an answer)"),
        ({"CALLBACK_HOLD": "-1"}, "CALLBACK_HOLD must be 0 to 35 seconds"),
        ({"REDIS_SENTINELS": "s1:26379, s2"}, "REDIS_SENTINELS must be host:port,host:port; not 's2'"),
        ({"REDIS_CLUSTER_NODES": "n1:7000, n2"}, "REDIS_CLUSTER_NODES must be host:port,host:port; not 'n2'"),
        ({"REDIS_CLUSTER_NODES": "n1:70000"}, "REDIS_CLUSTER_NODES must be host:port,host:port; not 'n1:70000'"),
        ({"REDIS_CLUSTER_NODES": "redis://:pw@n1:7000"}, "REDIS_CLUSTER_NODES must be host:port,host:port, not URLs"),
        ({"NOTIFY_SCHEDULE": "5,soon"}, "NOTIFY_SCHEDULE must be comma-separated seconds, not '5,soon'"),
        ({"NOTIFY_SCHEDULE": "5,604801"}, "NOTIFY_SCHEDULE delays must be from 0 to 604800 seconds"),
        ({"NOTIFY_TIMEOUT": "0"}, "NOTIFY_TIMEOUT must be more than 0"),
        ({"NOTIFY_HOSTS": "a.example.com"}, "WEBHOOK_SECRET is required when NOTIFY_HOSTS is set"),
        ({"WEBHOOK_SECRET": "secret"}, "WEBHOOK_SECRET must be whsec_ followed by base64 (comma-separate several)"),
        ({"NOTIFY_HOSTS": "http://a.example.com", "WEBHOOK_SECRET": SECRET}, "NOTIFY_HOSTS entry"),
    ],
)
def test_an_unusable_value_stops_start_up_naming_its_variable(env, message):
    with pytest.raises(ConfigError) as raised:
        Settings.from_env(env)
    assert str(raised.value).startswith(message)


def test_values_are_read_as_declared():
    settings = Settings.from_env(
        {
            "PORT": " 9001 ",
            "CALLBACK_METHOD": "get",
            "LOG_LEVEL": "DEBUG",
            "LOG_FORMAT": "JSON",
            "REDIS_SENTINELS": "s1:26379, [::1]:26380",
            "REDIS_CLUSTER_NODES": "10.0.0.1:7000, [::1]:7001",
            "REDIS_SENTINEL_MASTER": "main",
            "REDIS_TLS_INSECURE": "Yes",
            "ACCEPT_V2_SIGNATURES": "no",
            "API_KEYS": " a, acme:b ,,",
            "CALLBACK_HOLD": "2.5",
            "SPOOL_DIR": " spool ",
            "NOTIFY_SCHEDULE": "1,2.5",
            "WEB_CONCURRENCY": "3",
            "ACCESS_LOG": "-",
        }
    )
    assert (settings.port, settings.public_url) == (9001, "")  # no default: web and workers refuse to start without one
    assert (settings.callback_method, settings.log_level, settings.log_format) == ("GET", "debug", "json")
    assert settings.redis_sentinels == (("s1", 26379), ("::1", 26380)) and settings.redis_sentinel_master == "main"
    assert settings.redis_cluster_nodes == (("10.0.0.1", 7000), ("::1", 7001))
    assert settings.summary().startswith("store on cluster 10.0.0.1:7000,[::1]:7001, Redis sentinels s1:26379")
    assert settings.redis_tls_insecure and not settings.accept_v2_signatures
    assert settings.api_keys == ("a", "acme:b")
    assert (settings.callback_hold, settings.spool_dir, settings.notify_schedule) == (2.5, "spool", (1.0, 2.5))
    assert (settings.web_concurrency, settings.access_log) == (3, "-")
    assert (
        Settings.from_env({"PORT": "9001", "PUBLIC_URL": "https://hooks.example.com/"}).public_url
        == "https://hooks.example.com"
    )


def test_the_upstream_url_gets_its_final_slash():
    declaration = declarations()["plivo_api_url"]
    assert declaration.read(declaration.variable, "http://upstream/v1") == "http://upstream/v1/"
    assert declaration.read(declaration.variable, "http://upstream/v1/") == "http://upstream/v1/"


def test_secrets_stay_out_of_the_repr():
    settings = Settings.from_env(
        {
            "PLIVO_AUTH_TOKEN": "token-1",
            "PLIVO_MAIN_AUTH_TOKEN": "token-2",
            "API_KEYS": "key-1",
            "NOTIFY_HOSTS": "a.example.com",
            "WEBHOOK_SECRET": SECRET,
        }
    )
    assert not any(secret in repr(settings) for secret in ("token-1", "token-2", "key-1", SECRET))


def test_a_password_in_a_url_stays_out_of_the_start_up_line():
    settings = Settings.from_env({"PUBLIC_URL": "https://hook:pw-1@hooks.example.com:8443"})
    assert "callbacks to https://hook:***@hooks.example.com:8443/callbacks/plivo" in settings.summary()
    assert "pw-1" not in settings.summary()
    assert config.shown_url("https://hooks.example.com/x?a=1") == "https://hooks.example.com/x?a=1"


def test_settings_are_made_with_keyword_overrides_as_tests_make_them():
    settings = Settings(plivo_api_url="http://127.0.0.1:1/v1/", plivo_timeout=5, max_waiters=3)
    assert (settings.plivo_api_url, settings.plivo_timeout, settings.max_waiters) == ("http://127.0.0.1:1/v1/", 5, 3)
    assert settings.result_ttl == Settings.from_env({}).result_ttl


def test_config_imports_nothing_of_the_store():
    """gunicorn's master reads config.py, and the store depends on it, not the other way round."""
    probe = (
        "import sys, config\n"
        "config.Settings.from_env({})\n"
        "print(sorted({n.split('.')[0] for n in sys.modules} & {'store', 'redis', 'rq', 'flask', 'workers', "
        "'receiver'}))"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# Reading a setting from the process's environment anywhere but config.py.
ENVIRON = {"os.environ", "environ"}
GETENV = {"os.getenv", "getenv", "os.environ.get", "environ.get", "os.environ.pop", "environ.pop"}


def settings_read_from_the_environment(source: str, names: set[str]) -> list[str]:
    """The declared variables `source` reads from the process's environment (os.environ or
    getenv), each with its line."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and ast.unparse(node.func) in GETENV and node.args:
            key = node.args[0]
        elif isinstance(node, ast.Subscript) and ast.unparse(node.value) in ENVIRON:
            key = node.slice
        elif (
            isinstance(node, ast.Compare)
            and isinstance(node.ops[0], (ast.In, ast.NotIn))
            and ast.unparse(node.comparators[0]) in ENVIRON
        ):
            key = node.left
        else:
            continue
        if isinstance(key, ast.Constant) and key.value in names:
            found.append(f"{key.value} (line {node.lineno})")
    return found


@pytest.mark.parametrize(
    "source",
    [
        "os.environ.get('PORT', '8000')",
        "os.environ['LOG_LEVEL']",
        "getenv('PORT')",
        "'ACCESS_LOG' in os.environ",
        "environ.get('REDIS_URL') or None",
    ],
)
def test_the_scan_finds_a_setting_read_from_the_environment(source):
    assert settings_read_from_the_environment(source, {d.variable for d in declarations().values()})


def test_no_module_but_config_reads_a_setting_from_the_environment():
    """Everything takes its settings from Settings.from_env(), so each is parsed, checked and
    defaulted in one place. Tests and launchers may set variables for the processes they start."""
    names = {d.variable for d in declarations().values()}
    tracked = subprocess.run(
        ["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    found = [
        f"{path}: {hit}"
        for path in tracked
        if path != "config.py" and not path.startswith("tests/")
        if (ROOT / path).is_file()
        for hit in settings_read_from_the_environment((ROOT / path).read_text(), names)
    ]
    assert found == [], "read these from config.Settings instead"


def test_a_cluster_splits_the_store_unless_told_how_and_never_into_one_partition():
    seeds = {"REDIS_CLUSTER_NODES": "127.0.0.1:7000"}
    assert Settings.from_env({}).store_partitions == 1
    assert Settings.from_env(seeds).store_partitions == config.CLUSTER_PARTITIONS
    assert Settings.from_env({**seeds, "STORE_PARTITIONS": "6"}).store_partitions == 6
    with pytest.raises(ConfigError, match="STORE_PARTITIONS=1 keeps every key under one prefix"):
        Settings.from_env({**seeds, "STORE_PARTITIONS": "1"})
