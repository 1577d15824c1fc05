"""`flag_rules_changed(environment_ids=[...])` is sent after a flag change commits, so caches
of runtime snapshots in this process can drop those environments at once (other processes
refresh within their one-second bound)."""

from django.dispatch import Signal

flag_rules_changed = Signal()
