"""Carry the request id from the web request that queued a task into the task's logs."""

from celery.signals import before_task_publish, task_postrun, task_prerun

from console.core import context

_tokens: dict = {}


@before_task_publish.connect
def add_request_id(headers=None, **_):
    if headers is not None:
        headers.setdefault("airlock_request_id", context.current().request_id)


@task_prerun.connect
def bind_request_id(task_id=None, task=None, **_):
    request_id = getattr(task.request, "airlock_request_id", None) or task_id or ""
    _tokens[task_id] = context._current.set(context.RequestContext(request_id=request_id))


@task_postrun.connect
def unbind_request_id(task_id=None, **_):
    token = _tokens.pop(task_id, None)
    if token is not None:
        context._current.reset(token)
