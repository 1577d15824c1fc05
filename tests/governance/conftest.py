"""The releases world (dev, staging, protected prod with a versioned policy, a prompt with three
versions, a golden set) serves the governance tests too."""

from tests.releases.conftest import fast_passwords, fresh_runtime_state, world  # noqa: F401
