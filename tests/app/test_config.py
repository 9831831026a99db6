"""Config: schema, precedence, validation, saving with comments kept, the `config` command."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import tomlkit

from app.config import (
    SCHEMA,
    Config,
    config_path,
    load_config,
    mask_url,
    render_template,
    save_config,
    validate_file,
)
from app.config_schema import ENDPOINT_SCHEMA, all_fields
from engine.errors import ConfigError
from tests.support.cli import REPO, run_lampchat

# -- location ---------------------------------------------------------------------------------


def test_config_path_precedence(tmp_path: Path) -> None:
    env = {"XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    assert config_path(None, env) == Path(os.environ["XDG_CONFIG_HOME"]) / "lampchat/config.toml"
    env["LAMPCHAT_CONFIG"] = str(tmp_path / "env.toml")
    assert config_path(None, env) == tmp_path / "env.toml"
    assert config_path(str(tmp_path / "cli.toml"), env) == tmp_path / "cli.toml"


def test_first_run_writes_the_commented_template(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "config.toml"
    config = load_config(path, env={})
    assert path.read_text() == (REPO / "assets/config.toml").read_text()
    assert config.warnings == []
    # every value is commented out, so everything is still a default
    assert all(source == "default" for _, _, source in config.items())


def test_template_in_assets_matches_the_schema(tmp_path: Path) -> None:
    """assets/config.toml is generated from the schema; regenerate it when the schema changes."""
    assert (REPO / "assets/config.toml").read_text() == render_template()
    text = render_template()
    for field in all_fields():
        assert f"# {field.key} = {tomlkit.item(field.default).as_string()}" in text
    # uncommenting every example line gives a valid file holding the defaults
    uncommented = "\n".join(
        line[2:] if line.startswith("# ") and (" = " in line or line.startswith("# ["))
        and not line.startswith("# #") else line
        for line in text.splitlines()
    )
    path = tmp_path / "config.toml"
    path.write_text(uncommented)
    assert validate_file(path) == []
    config = load_config(path, env={})
    assert all(value == field.default for field, value, _ in config.items()
               if field.section != "remote.local")
    assert config.remote_endpoints()["local"]["base_url"].startswith("http://")


def test_create_false_writes_nothing(tmp_path: Path) -> None:
    load_config(tmp_path / "c.toml", env={}, create=False)
    assert not (tmp_path / "c.toml").exists()


# -- precedence matrix ------------------------------------------------------------------------

LAYER_VALUES = {"file": 0.1, "env": 0.2, "cli": 0.3, "session": 0.4}


@pytest.mark.parametrize("layers", [
    (), ("file",), ("env",), ("cli",), ("session",),
    ("file", "env"), ("file", "cli"), ("env", "cli"), ("file", "session"),
    ("file", "env", "cli"), ("file", "env", "cli", "session"),
])
def test_precedence_matrix(tmp_path: Path, layers: tuple[str, ...]) -> None:
    """Each layer overrides every layer below it: session > cli > env > file > default."""
    path = tmp_path / "config.toml"
    path.write_text("[generation]\ntemperature = 0.1\n" if "file" in layers else "")
    env = {"LAMPCHAT_GENERATION__TEMPERATURE": "0.2"} if "env" in layers else {}
    cli = {"generation.temperature": 0.3} if "cli" in layers else {}
    config = load_config(path, env=env, cli=cli)
    if "session" in layers:
        config.set("generation.temperature", "0.4")
    expected_source = layers[-1] if layers else "default"
    expected = LAYER_VALUES[expected_source] if layers else 0.7
    assert config.get("generation.temperature") == expected
    assert config.source("generation.temperature") == expected_source
    # the other keys are untouched by the layers
    assert config.get("generation.top_k") == 40
    assert config.source("generation.top_k") == "default"


def test_env_types_are_coerced_for_every_kind(tmp_path: Path) -> None:
    env = {
        "LAMPCHAT_GENERATION__TOP_K": "7",
        "LAMPCHAT_UI__STREAM": "off",
        "LAMPCHAT_MODEL__DIRS": "/a, /b",
        "LAMPCHAT_BACKEND__FALLBACK": '["native", "llama.cpp"]',
        "LAMPCHAT_GENERATION__SEED": "random",
        "LAMPCHAT_REMOTE__LAB__BASE_URL": "http://127.0.0.1:9/v1",
        "LAMPCHAT_REMOTE__LAB__API_KEY_ENV": "LAB_KEY",
        "LAB_KEY": "k-123",
        "LAMPCHAT_CONFIG": str(tmp_path / "unused.toml"),  # not a key: no warning
        "LAMPCHAT_LOG_FILE": "/dev/null",
    }
    config = load_config(tmp_path / "c.toml", env=env)
    assert config.warnings == []
    assert config.get("generation.top_k") == 7
    assert config.get("ui.stream") is False
    assert config.get("model.dirs") == ["/a", "/b"]
    assert config.get("backend.fallback") == ["native", "llama.cpp"]
    assert config.get("generation.seed") == -1 and config.sampling().seed is None
    endpoints = config.remote_endpoints()
    assert endpoints == {"lab": {"base_url": "http://127.0.0.1:9/v1", "api_key_env": "LAB_KEY",
                                 "api_key": "k-123", "timeout": 60.0, "retries": 2}}
    assert config.default_endpoint() == "lab"


def test_sampling_and_load_settings_views(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        "[generation]\ntemperature = 0\nseed = 42\nmax_tokens = 9\ncontext_length = 0\n"
        "[backend]\nthreads = 3\ngpu_layers = 0\ndevice = \"cpu\"\n"
    )
    config = load_config(path, env={})
    sampling = config.sampling()
    assert (sampling.temperature, sampling.seed, sampling.max_tokens) == (0.0, 42, 9)
    sampling.validate()
    settings = config.load_settings()
    assert (settings.n_ctx, settings.n_threads, settings.n_gpu_layers, settings.device) == (
        0, 3, 0, "cpu")
    defaults = load_config(tmp_path / "none.toml", env={}).load_settings()
    assert (defaults.n_threads, defaults.n_gpu_layers) == (None, None)


# -- invalid configs: every case warns, uses defaults, never crashes ----------------------------

INVALID_CASES = {
    "unknown key": ("[generation]\ntemprature = 0.2\n", 2, "generation.temprature",
                    "temperature"),
    "unknown section": ("[generaton]\ntemperature = 0.2\n", 1, "[generaton]", "generation"),
    "wrong type string for float": ('[generation]\ntemperature = "hot"\n', 2,
                                    "generation.temperature", "a number"),
    "bool for int": ("[generation]\ntop_k = true\n", 2, "generation.top_k", "an integer"),
    "float for int": ("[generation]\nmax_tokens = 1.5\n", 2, "generation.max_tokens",
                      "an integer"),
    "int for bool": ("[ui]\nstream = 1\n", 2, "ui.stream", "true or false"),
    "string for list": ('[model]\ndirs = "/models"\n', 2, "model.dirs", "a list of strings"),
    "list of ints": ("[model]\ndirs = [1, 2]\n", 2, "model.dirs", "a list of strings"),
    "below minimum": ("[generation]\nmax_tokens = 0\n", 2, "generation.max_tokens", ">= 1"),
    "above maximum": ("[generation]\ntop_p = 1.5\n", 2, "generation.top_p", "<= 1"),
    "exclusive minimum": ("[generation]\ntop_p = 0.0\n", 2, "generation.top_p", "> 0"),
    "exclusive maximum": ("[generation]\nmin_p = 1.0\n", 2, "generation.min_p", "< 1"),
    "bad choice": ('[backend]\ndefault = "gpt"\n', 2, "backend.default", "llama.cpp"),
    "bad list choice": ('[backend]\nfallback = ["native", "cuda"]\n', 2, "backend.fallback",
                        "a list of"),
    "section is a value": ("generation = 3\n", 1, "generation", "table"),
    "top-level key": ("temperature = 0.2\n", 1, "[temperature]", "sections"),
    "unknown endpoint key": ('[remote.lab]\nbase_url = "http://x"\nurl = "y"\n', 3,
                             "remote.lab.url", "base_url"),
    "endpoint bad timeout": ('[remote.lab]\nbase_url = "http://x"\ntimeout = 0\n', 3,
                             "remote.lab.timeout", "> 0"),
    "nan": ("[generation]\ntemperature = nan\n", 2, "generation.temperature", "a number"),
    "seed below -1": ("[generation]\nseed = -2\n", 2, "generation.seed", ">= -1"),
}


@pytest.mark.parametrize("case", sorted(INVALID_CASES))
def test_invalid_config_warns_names_file_key_line_and_allowed(tmp_path: Path, case: str) -> None:
    text, line, key, allowed = INVALID_CASES[case]
    path = tmp_path / "config.toml"
    path.write_text(text)
    problems = validate_file(path)
    assert len(problems) == 1, problems
    problem = problems[0]
    assert problem.startswith(f"{path}:{line}:"), problem
    assert key in problem and allowed in problem, problem
    # the app still starts: every key has a valid value (the default for the bad one)
    config = load_config(path, env={})
    assert config.warnings == problems
    for field, value, _source in config.items():
        field.check(value)
    config.sampling().validate()
    assert path.read_text() == text  # never rewritten


def test_unparsable_file_uses_defaults_and_is_never_saved_over(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    text = '[generation]\ntemperature = 0.2\n[ui\ntheme = "nord"\n'
    path.write_text(text)
    problems = validate_file(path)
    assert len(problems) == 1 and problems[0].startswith(f"{path}:3:")
    assert "not valid TOML" in problems[0]
    config = load_config(path, env={})
    assert config.parse_failed and config.get("generation.temperature") == 0.7
    config.set("generation.top_k", 5)
    with pytest.raises(ConfigError, match="could not be parsed"):
        save_config(config)
    assert path.read_text() == text
    assert [p.name for p in tmp_path.iterdir()] == ["config.toml"]  # no temp file left


def test_binary_garbage_file(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(b"\xff\xfe\x00garbage\x00")
    config = load_config(path, env={})
    assert config.parse_failed and len(config.warnings) == 1 and str(path) in config.warnings[0]
    with pytest.raises(ConfigError):
        save_config(config)
    assert path.read_bytes() == b"\xff\xfe\x00garbage\x00"


def test_bad_env_values_warn_and_fall_back_to_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[generation]\ntemperature = 0.5\n")
    env = {"LAMPCHAT_GENERATION__TEMPERATURE": "hot", "LAMPCHAT_NOPE__X": "1",
           "LAMPCHAT_GENERATION__NOPE": "1", "LAMPCHAT_REMOTE__LAB__API_KEY": "",
           "LAMPCHAT_UI__STREAM": "maybe"}
    config = load_config(path, env=env)
    assert config.get("generation.temperature") == 0.5
    assert config.source("generation.temperature") == "file"
    assert config.get("ui.stream") is True
    text = "\n".join(config.warnings)
    for name in ("LAMPCHAT_GENERATION__TEMPERATURE", "LAMPCHAT_NOPE__X",
                 "LAMPCHAT_GENERATION__NOPE", "LAMPCHAT_UI__STREAM"):
        assert name in text
    assert len(config.warnings) == 4


def test_bad_cli_value_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"generation.top_p: .*allowed: a number, > 0"):
        load_config(tmp_path / "c.toml", env={}, cli={"generation.top_p": 2.0})


def test_set_coerces_and_validates() -> None:
    config = load_config(Path("/nonexistent/c.toml"), env={}, create=False)
    config.set("generation.temperature", "0.3")
    assert config.get("generation.temperature") == 0.3
    config.set("generation.max_tokens", 100)
    config.set("ui.show_metrics", "no")
    assert config.get("ui.show_metrics") is False
    config.set("generation.temperature", 1)  # int widened
    assert isinstance(config.get("generation.temperature"), float)
    for dotted, value, message in [
        ("generation.temperature", "-1", "out of range"),
        ("generation.temperature", "warm", "is not a number"),
        ("generation.max_tokens", "1.5", "is not an integer"),
        ("generation.max_tokens", True, "wrong type"),
        ("backend.device", "tpu", "one of: auto, cpu, cuda, metal, opencl"),
        ("generation.nope", "1", "unknown key"),
        ("nope", "1", "unknown config key"),
        ("remote.default.base_url", "x", "not a valid remote endpoint name"),
    ]:
        with pytest.raises(ConfigError, match=message):
            config.set(dotted, value)
    assert config.get("generation.temperature") == 1.0  # failed sets changed nothing


def test_get_returns_copies_of_lists() -> None:
    config = Config(Path("x.toml"), env={})
    config.get("model.dirs").append("/oops")
    assert config.get("model.dirs") == []


def test_secret_is_never_in_warnings_repr_or_show(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[remote.lab]\nbase_url = "http://127.0.0.1:9/v1"\napi_key = "sk-SECRET1"\n'
                    '[remote.bad]\nbase_url = "http://x"\napi_key = ["sk-SECRET2"]\n')
    config = load_config(path, env={"LAMPCHAT_REMOTE__LAB__API_KEY": "sk-SECRET3"})
    assert config.remote_endpoints()["lab"]["api_key"] == "sk-SECRET3"
    assert "SECRET" not in "\n".join(config.warnings) and config.warnings
    assert "SECRET" not in repr(config)
    done = run_lampchat("config", "show", "--config", str(path),
                        env={"LAMPCHAT_REMOTE__LAB__API_KEY": "sk-SECRET3"})
    assert done.returncode == 0, done.stderr
    assert "SECRET" not in done.stdout + done.stderr
    assert 'api_key = "<hidden>"  # env' in done.stdout


@pytest.mark.parametrize(("url", "shown"), [
    ("http://127.0.0.1:8080/v1", "http://127.0.0.1:8080/v1"),
    ("http://bob:sk-PASS@host:9/v1", "http://bob:****@host:9/v1"),
    ("https://sk-TOKENONLY@host/v1", "https://sk-TOKENONLY@host/v1"),  # user only: no password
    ("http://host/v1?api_key=sk-Q&debug", "http://host/v1?api_key=****&debug"),
    ("http://host/v1#sk-FRAG", "http://host/v1#****"),
    ("http://u:sk-P@host:notaport/v1", "****"),
])
def test_mask_url(url: str, shown: str) -> None:
    assert mask_url(url) == shown


def test_config_show_masks_url_credentials(tmp_path: Path) -> None:
    """A password or a key in an endpoint's base_url is never printed either."""
    path = tmp_path / "c.toml"
    path.write_text('[remote.lab]\nbase_url = "http://bob:sk-URLPASS@127.0.0.1:9/v1"\n'
                    '[remote.q]\nbase_url = "http://127.0.0.1:9/v1?api_key=sk-QUERY"\n')
    done = run_lampchat("config", "show", "--config", str(path))
    assert done.returncode == 0, done.stderr
    assert "sk-" not in done.stdout + done.stderr
    assert 'base_url = "http://bob:****@127.0.0.1:9/v1"  # file' in done.stdout
    assert 'base_url = "http://127.0.0.1:9/v1?api_key=****"  # file' in done.stdout
    done = run_lampchat("config", "set", "remote.lab.api_key", "sk-NEWKEY", "--config", str(path))
    assert done.returncode == 0 and "sk-" not in done.stdout + done.stderr
    assert load_config(path, env={}).remote_endpoints()["lab"]["api_key"] == "sk-NEWKEY"


# -- saving -----------------------------------------------------------------------------------

HAND_WRITTEN = """\
# My Lampchat settings -- keep this comment!

[generation]
temperature = 0.9   # warm
# top_k = 40
max_tokens = 256

[ui]
theme = "nord"  # I like nord
unknown_but_kept = 1

[remote.lab]
base_url = "http://127.0.0.1:8080/v1"
"""


def test_save_keeps_comments_order_and_untouched_keys(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(HAND_WRITTEN)
    config = load_config(path, env={})
    assert len(config.warnings) == 1 and "unknown_but_kept" in config.warnings[0]
    config.set("generation.temperature", 0.25)
    config.set("generation.top_k", 12)
    config.set("session.auto_save", False)
    config.set("remote.lab.retries", 5)
    config.set("remote.new.base_url", "http://127.0.0.1:9/v1")
    save_config(config)
    saved = path.read_text()
    assert saved.startswith("# My Lampchat settings -- keep this comment!\n")
    assert "temperature = 0.25   # warm\n" in saved
    assert "top_k = 12\nmax_tokens = 256\n" in saved  # the placeholder line became the value
    assert 'theme = "nord"  # I like nord\nunknown_but_kept = 1\n' in saved
    assert saved.index("[generation]") < saved.index("[ui]") < saved.index("[remote.lab]")
    again = load_config(path, env={})
    assert again.get("generation.temperature") == 0.25
    assert again.get("generation.top_k") == 12
    assert again.get("session.auto_save") is False
    assert again.get("remote.lab.retries") == 5
    assert again.remote_endpoints()["new"]["base_url"] == "http://127.0.0.1:9/v1"
    assert again.source("generation.max_tokens") == "file"
    # saving with nothing changed writes the same text
    save_config(again)
    assert path.read_text() == saved


def test_save_into_the_template_uncomments_in_place(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    config = load_config(path, env={})
    config.set("generation.temperature", 0.2)
    config.set("backend.fallback", ["native"])
    config.set("remote.default", "lab")
    save_config(config)
    text = path.read_text()
    lines = text.splitlines()
    at = lines.index("temperature = 0.2")
    assert lines[at - 1].startswith("# Sampling temperature")
    assert 'fallback = ["native"]' in lines and 'default = "lab"' in lines
    assert "# temperature = 0.7" not in text
    assert len(lines) == len(render_template().splitlines())


def test_save_picks_up_edits_made_on_disk_meanwhile(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[generation]\ntop_k = 10\n")
    config = load_config(path, env={})
    path.write_text("[generation]\ntop_k = 10\n\n[ui]\ntheme = \"gruvbox\"\n")
    config.set("generation.top_k", 11)
    save_config(config)
    saved = tomlkit.parse(path.read_text()).unwrap()
    assert saved == {"generation": {"top_k": 11}, "ui": {"theme": "gruvbox"}}


def test_env_and_cli_values_are_not_saved(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[generation]\n")
    config = load_config(path, env={"LAMPCHAT_GENERATION__TOP_K": "3"},
                         cli={"generation.temperature": 0.1})
    config.set("generation.max_tokens", 64)
    save_config(config)
    assert tomlkit.parse(path.read_text()).unwrap() == {"generation": {"max_tokens": 64}}


def test_save_is_atomic_and_keeps_permissions(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[generation]\n")
    path.chmod(0o640)
    config = load_config(path, env={})
    config.set("generation.top_k", 1)
    inode = path.stat().st_ino
    save_config(config)
    assert path.stat().st_ino != inode  # replaced by rename, not rewritten in place
    assert path.stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.toml"]


def test_save_to_another_path(tmp_path: Path) -> None:
    config = load_config(tmp_path / "a.toml", env={})
    config.set("ui.theme", "nord")
    save_config(config, tmp_path / "b.toml")
    assert load_config(tmp_path / "b.toml", env={}).get("ui.theme") == "nord"
    assert load_config(tmp_path / "a.toml", env={}).get("ui.theme") == "textual-dark"


def test_every_schema_field_is_documented_and_its_default_valid() -> None:
    for section, fields in SCHEMA.items():
        for key, field in fields.items():
            assert (field.section, field.key) == (section, key)
            assert field.help.strip()
            assert field.check(field.default) == field.default
    for field in ENDPOINT_SCHEMA.values():
        assert field.check(field.default) == field.default
    assert set(SCHEMA) == {"model", "generation", "backend", "session", "ui", "remote"}


# -- the command ------------------------------------------------------------------------------


def test_config_command_path_show_validate(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    env = {"LAMPCHAT_CONFIG": str(path), "LAMPCHAT_GENERATION__TOP_K": "9"}
    done = run_lampchat("config", "path", env=env)
    assert done.stdout.strip() == str(path) and not path.exists()
    done = run_lampchat("config", "validate", env=env)
    assert done.returncode == 0 and "defaults apply" in done.stdout
    path.write_text("[generation]\ntemperature = 0.3\n")
    done = run_lampchat("config", "show", env=env)
    assert done.returncode == 0, done.stderr
    assert "temperature = 0.3  # file" in done.stdout
    assert "top_k = 9  # env" in done.stdout
    assert "max_tokens = 512  # default" in done.stdout
    assert run_lampchat("config", "validate", env=env).stdout.strip().endswith("OK")
    path.write_text("[generation]\ntemperature = -3\nbogus = 1\n")
    done = run_lampchat("config", "validate", env=env)
    assert done.returncode == 1
    assert f"{path}:2: generation.temperature" in done.stdout
    assert f"{path}:3: unknown key 'generation.bogus'" in done.stdout
    done = run_lampchat("config", "show", env=env)  # still runs, warns
    assert done.returncode == 0 and "temperature = 0.7  # default" in done.stdout
    assert "warning" in done.stderr and "Traceback" not in done.stderr


def test_config_set_command(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    done = run_lampchat("config", "set", "generation.temperature", "0.35", "--config", str(path))
    assert done.returncode == 0, done.stderr
    assert load_config(path, env={}).get("generation.temperature") == 0.35
    done = run_lampchat("config", "set", "generation.temperature", "hot", "--config", str(path))
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "is not a number" in done.stderr
