"""``[actor.settings]``: a table the actor reads as ``self.settings``, typed and checked
against the actor's settings dataclass when the config is loaded."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from actrhost import Actor
from actrhost._settings import SettingsError, build_settings, settings_type

from .actors import Configured, ConfiguredSettings, Retry
from .utils import TESTS_DIR, run
from .utils import actrhost_command as cli

CONFIGURED = """
[[actor]]
name = "configured"
type = "test+Configured"
handler = "actors:Configured"
instances = 2

[actor.settings]
target = "test+Echo"
mode = "slow"
ratio = 2            # an integer is a fine float
tags = ["a", "b"]
limits = { calls = 10 }

[actor.settings.retry]
attempts = 5

[[actor]]
name = "untyped"
type = "test+Untyped"
handler = "actors:Untyped"

[actor.settings]
anything = { goes = [1, 2] }
"""


def test_actors_read_their_settings_typed_or_as_a_table(node_factory):
    node = node_factory(CONFIGURED)

    async def ask() -> list[dict[str, Any]]:
        import actrhost

        async with actrhost.connect(node.config_path) as shell:
            answers = [
                await shell.call("configured", "test.Configured.Settings", b"", timeout=5),
                await shell.call("untyped", "test.Untyped.Settings", b"", timeout=5),
            ]
        return [json.loads(a) for a in answers]

    typed, untyped = run(ask())
    assert typed == {
        "class": "ConfiguredSettings",
        "target": "test+Echo",
        "mode": "slow",
        "ratio": 2.0,
        "verbose": False,
        "tags": ["a", "b"],
        "limits": {"calls": 10},
        "retry": {"attempts": 5, "backoff_s": 0.1},
        "note": None,
        "seen_in_init": "configured test+Configured slow",
    }
    assert untyped == {"settings": {"anything": {"goes": [1, 2]}}, "mapping": "mappingproxy"}


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ('mode = "slow"', "actor[0].settings.target: required setting is missing"),
        (
            'target = "x"\nmode = "medium"',
            "actor[0].settings.mode: must be one of 'fast', 'slow' (got 'medium')",
        ),
        ('target = "x"\nratio = "2"', "actor[0].settings.ratio: must be a number (got '2')"),
        ('target = "x"\nverbose = 1', "actor[0].settings.verbose: must be true or false (got 1)"),
        ('target = "x"\ntags = ["a", 2]', "actor[0].settings.tags[1]: must be a string (got 2)"),
        (
            'target = "x"\nlimits = { calls = "many" }',
            "actor[0].settings.limits.calls: must be an integer (got 'many')",
        ),
        (
            'target = "x"\nretry = { attempt = 2 }',
            "actor[0].settings.retry.attempt: unknown setting (allowed: attempts, backoff_s)",
        ),
        (
            'target = "x"\ntarge = "y"',
            "actor[0].settings.targe: unknown setting (allowed: target, mode, ratio, verbose, "
            "tags, limits, retry, note)",
        ),
        (  # quoted as written, on one line (the newline split the message, QA)
            'target = "x"\n"a\\nb" = 1',
            'actor[0].settings."a\\nb": unknown setting (allowed: target, mode, ratio, '
            "verbose, tags, limits, retry, note)",
        ),
    ],
)
def test_settings_that_do_not_fit_are_a_config_error_naming_the_key(tmp_path, settings, expected):
    config = tmp_path / "node.toml"
    config.write_text(
        f'[node]\nname = "settings"\npython_path = ["{TESTS_DIR}"]\n'
        '[[actor]]\nname = "configured"\ntype = "test+Configured"\n'
        f'handler = "actors:Configured"\n[actor.settings]\n{settings}\n'
    )
    for command in ("check", "run"):
        result = cli(command, str(config))
        assert (result.returncode, result.stdout) == (2, ""), result.stderr
        assert result.stderr == f"actrhost: config error: {config}: {expected}\n"


def test_settings_must_be_a_table(tmp_path):
    config = tmp_path / "node.toml"
    config.write_text(
        '[node]\nname = "settings"\n[[actor]]\nname = "e"\ntype = "test+Echo"\n'
        'handler = "actors:Echo"\nsettings = 3\n'
    )
    result = cli("check", str(config))
    assert (result.returncode, result.stderr) == (
        2,
        f"actrhost: config error: {config}: actor[0].settings: must be a table, written "
        "[actor.settings] (got 3)\n",
    )


@dataclass
class Holds:
    """A settings dataclass with a field type TOML cannot give."""

    when: set[int] = field(default_factory=set)


def test_a_settings_annotation_that_is_not_a_dataclass_fails_at_check():
    class Wrong(Actor):
        settings: int

    class Unsupported(Actor):
        settings: Holds

    with pytest.raises(SettingsError, match=r"Wrong\.settings must be annotated with a dataclass"):
        settings_type(Wrong)
    with pytest.raises(SettingsError, match=r"when: settings cannot hold a set\[int\]"):
        settings_type(Unsupported)


@dataclass
class Picky:
    """Settings whose own checks raise (a __post_init__ or a default_factory)."""

    port: int = 0
    seed: float = field(default_factory=lambda: 1 / 0)

    def __post_init__(self) -> None:
        if self.port < 0:
            raise ValueError(f"port {self.port} is negative")


def test_settings_whose_dataclass_raises_are_a_config_error():
    # `check` used to end in a ZeroDivisionError traceback.
    class Strict(Actor):
        settings: Picky

    with pytest.raises(SettingsError) as info:
        build_settings(Strict, {})
    assert info.value.problem == "Picky(...) raised ZeroDivisionError: division by zero"
    with pytest.raises(SettingsError) as info:
        build_settings(Strict, {"port": -1, "seed": 1.0})
    assert info.value.problem == "Picky(...) raised ValueError: port -1 is negative"


def test_build_settings_converts_and_defaults():
    built = build_settings(Configured, {"target": "t", "retry": {"backoff_s": 1}})
    assert built == ConfiguredSettings(target="t", retry=Retry(backoff_s=1.0))
    assert isinstance(built.retry.backoff_s, float)
    plain = build_settings(Actor, {"a": [1]})
    assert dict(plain) == {"a": [1]}
    with pytest.raises(TypeError):
        plain["b"] = 2  # read-only
    assert settings_type(Actor) is None


def test_check_shows_what_each_actor_will_get(tmp_path):
    config = tmp_path / "node.toml"
    config.write_text(f'[node]\nname = "settings"\npython_path = ["{TESTS_DIR}"]\n' + CONFIGURED)
    result = cli("check", str(config))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[-2] == (
        "  configured settings: ConfiguredSettings(target='test+Echo', mode='slow', ratio=2.0, "
        "verbose=False, tags=['a', 'b'], limits={'calls': 10}, retry=Retry(attempts=5, "
        "backoff_s=0.1), note=None)"
    )
    assert lines[-1] == "  untyped settings: {'anything': {'goes': [1, 2]}}"
