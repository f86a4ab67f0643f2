"""The order in which a worker dials the nodes of a cluster. No broker."""

from __future__ import annotations

from collections import Counter

import pytest

from amqp_worker._rabbitmq.failover import NodeRing

NODES = ["amqp://u:p@a/", "amqp://u:p@b/", "amqp://u:p@c/"]


def test_a_ring_goes_round_from_the_current_node() -> None:
    ring = NodeRing(NODES, shuffle=False)
    assert ring.current == NODES[0]
    assert ring.round() == NODES
    assert ring.advance() == NODES[1]
    assert ring.round() == [NODES[1], NODES[2], NODES[0]]
    assert ring.advance() == NODES[2]
    assert ring.advance() == NODES[0]  # after the last, the first again


def test_use_makes_a_node_current() -> None:
    ring = NodeRing(NODES, shuffle=False)
    ring.use(NODES[2])
    assert ring.current == NODES[2]
    assert ring.advance() == NODES[0]


def test_a_fleet_spreads_over_the_nodes() -> None:
    # 300 workers: each node is some worker's first choice (P(miss) ~ 3 * (2/3)**300).
    firsts = Counter(NodeRing(NODES).current for _ in range(300))
    assert set(firsts) == set(NODES)


def test_a_ring_never_shows_its_urls() -> None:
    ring = NodeRing(NODES)
    assert "u:p" not in repr(ring)
    assert len(ring) == 3


def test_a_ring_needs_a_node() -> None:
    with pytest.raises(ValueError, match="at least one"):
        NodeRing([])
