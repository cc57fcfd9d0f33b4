"""The public names (DESIGN §4) are a contract: this snapshot changes only on purpose."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import actrhost

PUBLIC = [
    "ActorInfo",
    "ActorState",
    "ActrError",
    "ActrId",
    "ActrType",
    "Actor",
    "BadRequest",
    "ClosedResourceError",
    "ConfigError",
    "Context",
    "DataStream",
    "DeadlineExceeded",
    "Dest",
    "ErrorCode",
    "HandlerError",
    "MediaSample",
    "MediaType",
    "NotFound",
    "PayloadType",
    "PermissionDenied",
    "Realm",
    "ServiceClient",
    "Shell",
    "Unauthorized",
    "Unavailable",
    "connect",
    "rpc",
    "service",
]


def test_all_is_the_documented_surface():
    assert sorted(actrhost.__all__) == sorted(PUBLIC)


def test_every_public_name_reports_the_public_module():
    for name in actrhost.__all__:
        obj = getattr(actrhost, name)
        assert obj.__module__ == "actrhost", name
        assert obj.__doc__, f"{name} has no docstring"


def test_design_contract_names_exist():
    from actrhost import Actor, ActrId, ActrType, Context, Dest, PayloadType, rpc  # noqa: F401

    assert {Dest.SHELL, Dest.LOCAL} and Dest.actor(ActrId.parse("1@1:a+b")).kind == "actor"
    assert [p.name for p in PayloadType] == [
        "RPC_RELIABLE",
        "RPC_SIGNAL",
        "STREAM_RELIABLE",
        "STREAM_LATENCY_FIRST",
        "MEDIA_RTP",
    ]
    # A Shell streams as an actor does (its registrations are plain methods).
    streams = (
        "register_stream",
        "unregister_stream",
        "send_data_stream",
        "register_media_track",
        "unregister_media_track",
        "send_media_sample",
    )
    for method in ("call", "tell", "discover", *streams):
        assert callable(getattr(Context, method))
    shell = ("actors", "on_rpc", "status", "restart_actors", "restart_gateway")
    for method in ("call", "tell", "discover", *shell, *streams):
        assert callable(getattr(actrhost.Shell, method))


def test_the_testing_module_is_small_typed_and_documented():
    import actrhost.testing as testing

    assert sorted(testing.__all__) == ["NodeFailed", "RunningNode", "running_node"]
    for name in testing.__all__:
        assert getattr(testing, name).__doc__, f"actrhost.testing.{name} has no docstring"


def test_typed_user_code_needs_no_casts(tmp_path: Path) -> None:
    # mypy --strict on code written as the docs show it (tests/typed_usage.py): calls
    # returned Any, and callbacks annotated `sender: ActrId` as DESIGN writes them were
    # refused (QA). The misuse below proves the check reads the package's types.
    misuse = tmp_path / "misuse.py"
    misuse.write_text(
        "from actrhost import Context, Dest\n\n\n"
        "async def count(ctx: Context) -> int:\n"
        '    n: int = await ctx.call(Dest.LOCAL, "t.T.Count")\n'
        "    return n\n"
    )
    usage = Path(__file__).with_name("typed_usage.py")
    mypy = [sys.executable, "-m", "mypy", "--strict", "--ignore-missing-imports"]
    result = subprocess.run(
        [
            *mypy,
            "--cache-dir",
            str(tmp_path / "cache"),
            "--no-error-summary",
            str(usage),
            str(misuse),
        ],
        env={**os.environ, "MYPYPATH": str(usage.parent.parent)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    # Only the two files' own lines: the package itself is checked by `mypy actrhost`.
    ours = [
        line for line in result.stdout.splitlines() if line.startswith((str(usage), str(misuse)))
    ]
    assert ours == [
        f'{misuse}:5: error: Incompatible types in assignment (expression has type "bytes", '
        'variable has type "int")  [assignment]'
    ], result.stdout + result.stderr
