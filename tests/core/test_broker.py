"""console/core/broker.py: a worker's channel closing after Redis went away must not raise
(Celery would exit the worker), and with a live connection the restore still happens."""

from __future__ import annotations

import logging

import pytest
import redis
from kombu import Connection

from console.core import broker
from tests.evals.workers import dedicated_broker_url

pytestmark = pytest.mark.services


@pytest.fixture
def channel(redis_url):
    url = dedicated_broker_url(redis_url)
    redis.Redis.from_url(url).flushdb()
    with Connection(url) as conn:
        queue = conn.SimpleQueue("airlock-broker-test")
        queue.put({"n": 1})
        message = queue.get(timeout=5)  # delivered, not acknowledged
        yield conn.default_channel, message, url
        queue.close()


def test_restoring_through_a_lost_connection_is_skipped_not_fatal(channel, caplog):
    chan, _message, url = channel
    assert chan.qos._delivered  # the worker holds one unacknowledged message
    client = chan.connection.client
    # What the channel looks like after the broker dropped it: no pool, no connection details.
    chan.connection.client = None
    chan._pool = None
    try:
        with pytest.raises(AttributeError):
            broker._restore_unacked(chan.qos)  # kombu's own restore: the worker would exit
        with caplog.at_level(logging.WARNING):
            assert broker.restore_unacked(chan.qos) is None
    finally:
        chan.connection.client = client
    assert "1 unacknowledged message(s) left in Redis" in caplog.text
    # The message is still in the unacked hash, where the visibility timeout brings it back.
    assert redis.Redis.from_url(url).hlen("unacked") == 1


def test_with_a_live_connection_the_message_goes_back_on_the_queue(channel):
    chan, _message, url = channel
    broker.restore_unacked(chan.qos)
    assert redis.Redis.from_url(url).llen("airlock-broker-test") == 1


def test_acknowledging_on_a_lost_connection_leaves_the_message_for_redelivery(channel, caplog):
    chan, message, url = channel
    tag = message.delivery_tag
    saved = chan.connection
    chan.connection, chan._pool = None, None  # the channel it arrived on has been closed
    try:
        with pytest.raises(AttributeError):
            broker._ack(chan.qos, tag)  # kombu's own ack: the worker would exit
        with caplog.at_level(logging.WARNING):
            broker.ack(chan.qos, tag)
    finally:
        chan.connection = saved
    assert "stays in Redis until the visibility timeout" in caplog.text
    assert tag in chan.qos._dirty  # forgotten locally at the next flush
    assert redis.Redis.from_url(url).hlen("unacked") == 1


def test_with_a_live_connection_an_ack_removes_the_message(channel):
    chan, message, url = channel
    broker.ack(chan.qos, message.delivery_tag)
    assert redis.Redis.from_url(url).hlen("unacked") == 0
