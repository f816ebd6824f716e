"""Invoke tasks of this repository: deployer's own collection (`inv deploy --env prod`, `inv fleet.up`, ...),
the same one a user's tasks.py imports (see deployer/tasks.py)."""

from deployer.tasks import ns  # noqa: F401
