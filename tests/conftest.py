"""Fixtures: ``node_factory`` starts real nodes and checks they leave nothing behind."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .utils import Node


@pytest.fixture
def node_factory(tmp_path: Path) -> Iterator[Callable[..., Node]]:
    """``node_factory(actors_toml, node_toml="", start=True)`` -> a running Node.

    Teardown stops every node it made and asserts no worker process and no run directory
    (socket files) remain.
    """
    nodes: list[Node] = []

    def make(actors_toml: str, node_toml: str = "", *, start: bool = True) -> Node:
        folder = tmp_path / f"node{len(nodes)}"
        folder.mkdir()
        node = Node(folder, actors_toml, node_toml)
        nodes.append(node)
        return node.start() if start else node

    yield make
    for node in nodes:
        node.cleanup()
