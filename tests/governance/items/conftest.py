"""The releases world (dev, staging, protected prod with a versioned policy, a prompt with three
versions, a golden set) serves the tests of each governance item."""

from tests.releases.conftest import fast_passwords, fresh_runtime_state, world  # noqa: F401
