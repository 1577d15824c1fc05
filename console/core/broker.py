"""Keeping Celery workers alive through a Redis restart.

When the broker connection drops, kombu's Redis transport still uses the closed channel twice,
and each raises AttributeError ("'NoneType' object has no attribute 'hostname'" / "'client'"),
which Celery treats as unrecoverable: the worker exits, and every eval it was running with it.

1. Closing the channel, it pushes this worker's unacknowledged messages back onto the queue.
2. A task that was running through the restart finishes (or retries) and acknowledges its
   message on the channel it arrived on — the closed one.

Nothing is lost by skipping both when the connection is gone: the messages are still in
Redis's unacked hash (kept across the restart by the append-only file), and any worker puts
them back on the queue once they are older than the visibility timeout. A redelivered eval
finds its run finished or leased and does nothing twice. The fault run
(tests/faults/test_fault_run.py) restarts Redis under a running eval and checks the worker
stays up.
"""

from __future__ import annotations

import logging

from kombu.transport import redis as kombu_redis
from kombu.transport.virtual import base as virtual_base

log = logging.getLogger(__name__)

_restore_unacked = kombu_redis.QoS.restore_unacked
_ack = kombu_redis.QoS.ack
_reject = kombu_redis.QoS.reject


def _connection_gone(qos) -> bool:
    connection = getattr(qos.channel, "connection", None)
    return connection is None or getattr(connection, "client", None) is None


def restore_unacked(self, client=None):
    if client is None and _connection_gone(self):
        log.warning(
            "broker connection lost: %d unacknowledged message(s) left in Redis, to be "
            "redelivered after the visibility timeout",
            len(self._delivered),
        )
        self._delivered.clear()
        return None
    return _restore_unacked(self, client)


def ack(self, delivery_tag):
    if _connection_gone(self):
        log.warning(
            "broker connection lost: message %s stays in Redis until the visibility timeout "
            "redelivers it",
            delivery_tag,
        )
        virtual_base.QoS.ack(self, delivery_tag)  # forget it locally
        return None
    return _ack(self, delivery_tag)


def reject(self, delivery_tag, requeue=False):
    if _connection_gone(self):
        log.warning("broker connection lost: could not reject message %s", delivery_tag)
        virtual_base.QoS.ack(self, delivery_tag)
        return None
    return _reject(self, delivery_tag, requeue=requeue)


def install() -> None:
    kombu_redis.QoS.restore_unacked = restore_unacked
    kombu_redis.QoS.ack = ack
    kombu_redis.QoS.reject = reject
